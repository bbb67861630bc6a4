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
/// For the Hugging Face interop issue: (1) how long <see cref="ModelFolder.Load"/> takes on a ~500M-parameter Llama
/// folder, fp32 and bf16, and how high the loading process's resident memory peaks against the file size; (2) forward
/// throughput of every supported family at 256 tokens, batch 1 through <see cref="Scorer.Score"/> (what
/// <c>tiangong score</c> runs) and batch 8 through plain forward.
/// </summary>
public static class InteropBench
{
    private const int SeqLen = 256;

    public static int Run(string[] args)
    {
        int threads = args.Length > 0 ? int.Parse(args[0]) : Environment.ProcessorCount;
        set_num_threads(threads);
        Console.WriteLine($"machine: {Environment.ProcessorCount} cores, torch threads {threads}; load average at start: {LoadAverage()}");
        LoadTimes();
        ScoreThroughput();
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
        loaded.Dispose();
        // Load builds the model first, and its constructor draws default weights that the file then overwrites:
        // timed again here, after the peak was read, to show how much of the load time that part is.
        clock.Restart();
        ModelConfigs.CreateModel(ModelConfigs.Load(Path.Combine(dir, ModelFolder.ConfigFile))).Dispose();
        double buildSeconds = clock.Elapsed.TotalSeconds;
        Console.WriteLine($"seconds={seconds:R} build_seconds={buildSeconds:R} hwm_before_kb={before} hwm_after_kb={after} parameter_bytes={parameterBytes}");
        return 0;
    }

    private static void LoadTimes()
    {
        // Llama, untied, 21 layers of width 1280: 2 × 32000 × 1280 embeddings + 21 × (4 × 1280² + 3 × 1280 × 3456) ≈ 498M.
        var config = new LlamaConfig(VocabSize: 32000, HiddenSize: 1280, IntermediateSize: 3456, NumHiddenLayers: 21,
            NumAttentionHeads: 20, NumKeyValueHeads: 20, MaxPositionEmbeddings: 2048, TieWordEmbeddings: false);
        config.Validate();
        var root = Path.Combine(Path.GetTempPath(), $"tiangong-interop-{Environment.ProcessId}");
        var fp32Dir = Path.Combine(root, "fp32");
        var bf16Dir = Path.Combine(root, "bf16");
        try
        {
            manual_seed(0);
            var clock = Stopwatch.StartNew();
            using (var model = new LlamaForCausalLM(config))
            {
                model.InitializeWeights();
                Console.WriteLine($"checkpoint: llama 21x1280, ffn 3456, 20 heads, vocab 32000, untied: {model.ParameterCount() / 1e6:F1}M parameters");
                ModelFolder.Save(fp32Dir, model, config, tokenizer: null);
            }
            Console.WriteLine($"built and saved fp32 in {clock.Elapsed.TotalSeconds:F1} s");
            clock.Restart();
            // long.MaxValue: one model.safetensors, like the fp32 folder, so the two loads differ only in dtype.
            ModelFolder.Convert(fp32Dir, bf16Dir, ScalarType.BFloat16, long.MaxValue);
            Console.WriteLine($"converted to bf16 in {clock.Elapsed.TotalSeconds:F1} s");

            // The folders were just written, so their pages are in the OS cache: these are warm-cache loads.
            Console.WriteLine("| folder | Load dtype | file GB | load s | of which building the model s | GB/s | peak RSS GB (before → after) | load's RSS growth / file | parameters in memory GB |");
            Console.WriteLine("|---|---|---|---|---|---|---|---|---|");
            LoadInChild(fp32Dir, "fp32", null);
            // Load(dir) with no dtype is what the CLI commands call: the model is built fp32 and the bf16 file widened.
            LoadInChild(bf16Dir, "bf16", null);
            LoadInChild(bf16Dir, "bf16", "bfloat16");
        }
        finally
        {
            if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
        }
    }

    private static void LoadInChild(string dir, string label, string? dtype)
    {
        long fileBytes = Directory.GetFiles(dir, "*.safetensors").Sum(f => new FileInfo(f).Length);
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
        double gb = 1e9;
        Console.WriteLine($"| {label} | {dtype ?? "(none: fp32)"} | {fileBytes / gb:F2} | {seconds:F2} | {double.Parse(fields["build_seconds"]):F2} | {fileBytes / gb / seconds:F2} | "
            + $"{before / gb:F2} → {after / gb:F2} | {(after - before) / fileBytes:F2}× | {long.Parse(fields["parameter_bytes"]) / gb:F2} |");
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
