using System.Diagnostics;
using TianGong.Checkpoints;
using TianGong.Inference;
using TianGong.Models;
using TianGong.Models.Bert;
using TianGong.Models.Gpt2;
using TianGong.Models.Llama;
using TianGong.Models.Mistral;
using TianGong.Models.Qwen2;
using TianGong.Models.T5;
using static TorchSharp.torch;

namespace TianGong.Bench;

/// <summary>
/// For the Hugging Face interop and loading issues: (1) how long <see cref="ModelFolder.Load"/> takes on ~500M-parameter
/// folders (Llama fp32 and bf16, GPT-2 fp32), side by side with how long merely reading the same files takes (a
/// FileStream loop and <c>cat</c>), and how high the loading process's resident memory peaks against the parameter
/// bytes; (2) forward throughput of every supported family at 256 tokens, batch 1 through <see cref="Scorer.Score"/>
/// (what <c>tiangong score</c> runs) and batch 8 through plain forward.
/// </summary>
public static class InteropBench
{
    private const int SeqLen = 256;

    /// <summary>interop [threads] [load|score]: both parts by default.</summary>
    public static int Run(string[] args)
    {
        int threads = args.Length > 0 ? int.Parse(args[0]) : Environment.ProcessorCount;
        string part = args.Length > 1 ? args[1] : "all";
        set_num_threads(threads);
        Console.WriteLine($"machine: {Environment.ProcessorCount} cores, torch threads {threads}; load average at start: {LoadAverage()}");
        if (part is "all" or "load") LoadTimes();
        if (part is "all" or "score") ScoreThroughput();
        Console.WriteLine($"load average at end: {LoadAverage()}");
        return 0;
    }

    /// <summary>
    /// The hidden sub-command the parent starts per measurement: a fresh process, so the peak RSS it reports belongs
    /// to this one load and not to the parent that built and saved the model.
    /// </summary>
    public static int RunLoadChild(string[] args)
    {
        var dir = args[0];
        ScalarType? dtype = args.Length > 1 ? ModelFolder.ParseDType(args[1], "dtype") : null;
        // Touch libtorch first, so the baseline already holds the native libraries and the delta is the load alone.
        zeros(1).Dispose();
        long before = StatusKb("VmHWM");
        var clock = Stopwatch.StartNew();
        var loaded = ModelFolder.Load(dir, dtype);
        double seconds = clock.Elapsed.TotalSeconds;
        long after = StatusKb("VmHWM");
        long parameterBytes = loaded.Module.parameters().Sum(p => p.numel() * p.element_size());
        var loadedDType = loaded.Module.parameters().First().dtype;
        loaded.Dispose();
        Console.WriteLine($"seconds={seconds:R} hwm_before_kb={before} hwm_after_kb={after} parameter_bytes={parameterBytes} dtype={ModelFolder.DTypeName(loadedDType)}");
        return 0;
    }

    private static void LoadTimes()
    {
        // Llama, untied, 21 layers of width 1280: 2 × 32000 × 1280 embeddings + 21 × (4 × 1280² + 3 × 1280 × 3456) ≈ 498M.
        var llama = new LlamaConfig(VocabSize: 32000, HiddenSize: 1280, IntermediateSize: 3456, NumHiddenLayers: 21,
            NumAttentionHeads: 20, NumKeyValueHeads: 20, MaxPositionEmbeddings: 2048, TieWordEmbeddings: false);
        // GPT-2, tied, 22 layers of width 1280: 50257 × 1280 + 1024 × 1280 + 22 × 12 × 1280² (+ biases, norms) ≈ 498M.
        var gpt2 = new Gpt2Config(VocabSize: 50257, NPositions: 1024, NEmbd: 1280, NLayer: 22, NHead: 20);
        var root = Path.Combine(Path.GetTempPath(), $"tiangong-interop-{Environment.ProcessId}");
        try
        {
            var llamaFp32 = Save(llama, Path.Combine(root, "llama-fp32"));
            var clock = Stopwatch.StartNew();
            var llamaBf16 = Path.Combine(root, "llama-bf16");
            // long.MaxValue: one model.safetensors, like the fp32 folder, so the two loads differ only in dtype.
            ModelFolder.Convert(llamaFp32, llamaBf16, ScalarType.BFloat16, long.MaxValue);
            Console.WriteLine($"converted to bf16 in {clock.Elapsed.TotalSeconds:F1} s");
            var gpt2Fp32 = Save(gpt2, Path.Combine(root, "gpt2-fp32"));

            // The folders were just written, so their pages are in the OS cache: warm-cache reads and loads alike.
            Console.WriteLine("| folder | Load dtype → loaded as | file GB | read s (FileStream / cat) | load s | load / read | peak RSS GB (before → after) | RSS growth / parameter bytes |");
            Console.WriteLine("|---|---|---|---|---|---|---|---|");
            LoadInChild(llamaFp32, "llama fp32", null);
            LoadInChild(llamaBf16, "llama bf16", null);
            LoadInChild(llamaBf16, "llama bf16", "float32");
            LoadInChild(gpt2Fp32, "gpt2 fp32", null);
        }
        finally
        {
            if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
        }
    }

    private static string Save(ICausalLMConfig config, string dir)
    {
        config.Validate();
        manual_seed(0);
        var clock = Stopwatch.StartNew();
        using var model = ModelConfigs.CreateCausalLM(config);
        model.InitializeWeights();
        ModelFolder.Save(dir, model, config, tokenizer: null);
        Console.WriteLine($"checkpoint {Path.GetFileName(dir)}: {model.ParameterCount() / 1e6:F1}M parameters, built and saved in {clock.Elapsed.TotalSeconds:F1} s");
        return dir;
    }

    private static void LoadInChild(string dir, string label, string? dtype)
    {
        var files = Directory.GetFiles(dir, "*.safetensors");
        long fileBytes = files.Sum(f => new FileInfo(f).Length);
        double readSeconds = ReadSeconds(files);
        double catSeconds = CatSeconds(files);
        var start = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, UseShellExecute = false };
        // Environment.ProcessPath is the dotnet host when the bench runs as `dotnet TianGong.Bench.dll`, and the
        // apphost itself otherwise; only the host needs the dll named.
        if (Path.GetFileNameWithoutExtension(Environment.ProcessPath!) == "dotnet")
            start.ArgumentList.Add(typeof(InteropBench).Assembly.Location);
        start.ArgumentList.Add("interop-load");
        start.ArgumentList.Add(dir);
        if (dtype is not null) start.ArgumentList.Add(dtype);
        using var child = Process.Start(start)!;
        var output = child.StandardOutput.ReadToEnd();
        child.WaitForExit();
        if (child.ExitCode != 0) throw new InvalidOperationException($"interop-load {dir} exited with {child.ExitCode}: {output}");
        var fields = output.Trim().Split('\n')[^1].Split(' ').Select(f => f.Split('=')).ToDictionary(kv => kv[0], kv => kv[1]);
        double seconds = double.Parse(fields["seconds"]);
        double before = long.Parse(fields["hwm_before_kb"]) * 1024.0, after = long.Parse(fields["hwm_after_kb"]) * 1024.0;
        double parameterBytes = long.Parse(fields["parameter_bytes"]);
        double gb = 1e9;
        Console.WriteLine($"| {label} | {dtype ?? "(none)"} → {fields["dtype"]} | {fileBytes / gb:F2} | {readSeconds:F2} / {catSeconds:F2} | {seconds:F2} | "
            + $"{seconds / Math.Min(readSeconds, catSeconds):F2}× | {before / gb:F2} → {after / gb:F2} | {(after - before) / parameterBytes:F2}× |");
    }

    /// <summary>Seconds to read the files through a 16 MiB buffer, the least any loader must spend on them.</summary>
    private static double ReadSeconds(string[] files)
    {
        var buffer = new byte[16 << 20];
        var clock = Stopwatch.StartNew();
        foreach (var file in files)
        {
            using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
            while (stream.Read(buffer) > 0) { }
        }
        return clock.Elapsed.TotalSeconds;
    }

    /// <summary>Seconds `cat FILES > /dev/null` takes.</summary>
    private static double CatSeconds(string[] files)
    {
        var start = new ProcessStartInfo("sh") { UseShellExecute = false };
        foreach (var arg in (string[])["-c", "cat \"$@\" > /dev/null", "sh", .. files]) start.ArgumentList.Add(arg);
        var clock = Stopwatch.StartNew();
        using var cat = Process.Start(start)!;
        cat.WaitForExit();
        return clock.Elapsed.TotalSeconds;
    }

    private static void ScoreThroughput()
    {
        // Comparable small models: width 512, 8 heads, vocab 8000, 6 layers (T5: 3 encoder + 3 decoder).
        IModelConfig[] configs =
        [
            new Gpt2Config(VocabSize: 8000, NPositions: 512, NEmbd: 512, NLayer: 6, NHead: 8),
            new LlamaConfig(VocabSize: 8000, HiddenSize: 512, IntermediateSize: 1376, NumHiddenLayers: 6, NumAttentionHeads: 8, NumKeyValueHeads: 8, MaxPositionEmbeddings: 512),
            // A window well under 256, so the banded mask is what runs.
            new MistralConfig(VocabSize: 8000, HiddenSize: 512, IntermediateSize: 1376, NumHiddenLayers: 6, NumAttentionHeads: 8, NumKeyValueHeads: 8, MaxPositionEmbeddings: 512, SlidingWindow: 64),
            new Qwen2Config(VocabSize: 8000, HiddenSize: 512, IntermediateSize: 1376, NumHiddenLayers: 6, NumAttentionHeads: 8, NumKeyValueHeads: 8, MaxPositionEmbeddings: 512),
            new BertConfig(VocabSize: 8000, HiddenSize: 512, NumHiddenLayers: 6, NumAttentionHeads: 8, IntermediateSize: 2048, MaxPositionEmbeddings: 512),
            new T5Config(VocabSize: 8000, DModel: 512, DKv: 64, DFf: 2048, NumLayers: 3, NumHeads: 8),
        ];
        Console.WriteLine($"| family | parameters | batch 1×{SeqLen} tokens/s | batch 8×{SeqLen} tokens/s |");
        Console.WriteLine("|---|---|---|---|");
        foreach (var config in configs)
        {
            config.Validate();
            manual_seed(0);
            using var module = ModelConfigs.CreateModel(config);
            switch (module)
            {
                case CausalLM lm: lm.InitializeWeights(); break;
                case T5ForConditionalGeneration t5: t5.InitializeWeights(); break;
                // BertModel keeps TorchSharp's default init: the values do not change the work a forward does.
            }
            module.eval();
            long parameters = module.parameters().Sum(p => p.numel());
            var forward = Forward(module);
            double one = TokensPerSecond(forward, batch: 1, reps: 4);
            double eight = TokensPerSecond(forward, batch: 8, reps: 2);
            Console.WriteLine($"| {config.ModelType} | {parameters / 1e6:F1}M | {one:N0} | {eight:N0} |");
        }
    }

    /// <summary>One forward pass over ids (B, T) for the module's family, its output disposed.</summary>
    private static Action<Tensor> Forward(nn.Module module) => module switch
    {
        // Batch 1 goes through Scorer, as `tiangong score` does (log-softmax in float64 and the gather included).
        CausalLM lm => ids =>
        {
            if (ids.shape[0] == 1) Scorer.Score(lm, ids[0].data<long>().Select(i => (int)i).ToArray());
            else lm.forward(ids).Dispose();
        },
        IEncoderModel encoder => ids => encoder.Encode(ids).Dispose(),
        // Decoder as long as the source: one full pass with teacher forcing, as scoring a pair would run.
        Seq2SeqLM t5 => ids => t5.forward(ids, ids).Dispose(),
        _ => throw new InvalidOperationException($"no forward for {module.GetType().Name}"),
    };

    /// <summary>Tokens per second over <paramref name="reps"/> timed passes after one untimed warm-up.</summary>
    private static double TokensPerSecond(Action<Tensor> forward, int batch, int reps)
    {
        using var _ = no_grad();
        using var ids = randint(0, 8000, [batch, SeqLen], dtype: ScalarType.Int64);
        using (NewDisposeScope()) forward(ids);
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < reps; i++)
        {
            using var scope = NewDisposeScope();
            forward(ids);
        }
        return (double)reps * batch * SeqLen / clock.Elapsed.TotalSeconds;
    }

    private static long StatusKb(string field)
    {
        var line = File.ReadLines("/proc/self/status").First(l => l.StartsWith(field + ":"));
        return long.Parse(line[(field.Length + 1)..].Trim().Split(' ')[0]);
    }

    private static string LoadAverage() => string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3));
}
