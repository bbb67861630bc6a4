using System.Diagnostics;
using TianGong.Checkpoints;
using TianGong.Data;
using TianGong.Inference;
using TianGong.Inference.Offload;
using TianGong.Models;
using TianGong.Poetry;
using TianGong.Training;
using TianGong.Tuning;
using TorchSharp;
using static TorchSharp.torch;

namespace TianGong.Bench;

/// <summary>
/// Compression and deployment, measured (bench/compression.sh makes the folders with the CLI first):
/// <c>compression</c> prints, for each model folder given as name=dir, its weight file size, its perplexity on
/// validation poems and its greedy decode tokens/s at batch 1 and 8; <c>offload</c> builds a deep model of a config's
/// width and compares it in memory with it streamed under a cap of a quarter of its size, each in a fresh process, so
/// the peak resident set (VmHWM) is that run's alone; what it holds beyond the weights is the runtime (.NET, libtorch,
/// activations, KV cache), the same in both runs.
/// </summary>
internal static class CompressionBench
{
    public static int Run(string[] args)
    {
        int steps = 16;
        var documents = ValidationPoems(100);
        Console.WriteLine($"validation: {documents.Count} tang/song poems (every 500th of the corpus), window 128; decode: {steps} greedy steps after an 8-token prompt, best of 3; "
            + $"torch threads {get_num_threads()}, {Environment.ProcessorCount} cores, load average {LoadAverage()}");
        Console.WriteLine("variant | weight files MB | parameters M | validation perplexity | batch 1 tok/s | batch 8 tok/s");
        foreach (var arg in args)
        {
            var (name, dir) = (arg[..arg.IndexOf('=')], arg[(arg.IndexOf('=') + 1)..]);
            using var loaded = ModelFolder.Load(dir);
            var lm = loaded.AsCausalLM("bench");
            double mb = Directory.GetFiles(dir, "*.safetensors").Sum(f => new FileInfo(f).Length) / 1e6;
            var ppl = Evaluation.Perplexity(lm, loaded.Tokenizer!, documents, 128).Perplexity;
            Console.WriteLine($"{name} | {mb:F1} | {lm.ParameterCount() / 1e6:F1} | {ppl:F1} | {Decode(lm, 1, steps).TokensPerSecond:F1} | {Decode(lm, 8, steps).TokensPerSecond:F1}");
        }
        return 0;
    }

    /// <summary>
    /// A model of <paramref name="args"/>[0]'s config with [1] layers (default 24) and random weights (speed and memory
    /// do not depend on the values), run in memory and under --max-memory of a quarter of its weights.
    /// </summary>
    public static int RunOffload(string[] args)
    {
        string configPath = args.Length > 0 ? args[0] : "configs/poetry-small.json";
        int layers = args.Length > 1 ? int.Parse(args[1]) : 24;
        int steps = args.Length > 2 ? int.Parse(args[2]) : 24;
        var config = PretrainConfig.Load(configPath).Model.WithTokenizer(16384, 0, 0);
        config = config switch
        {
            Models.Gpt2.Gpt2Config g => g with { NLayer = layers },
            Models.Llama.LlamaConfig l => l with { NumHiddenLayers = layers },
            _ => throw new InvalidOperationException($"offload bench: {config.ModelType} not covered"),
        };
        var dir = Path.Combine(Path.GetTempPath(), "tiangong-bench-offload", $"{config.ModelType}-{layers}");
        if (!File.Exists(Path.Combine(dir, ModelFolder.WeightsFile)))
        {
            manual_seed(0);
            using var model = ModelConfigs.CreateCausalLM(config);
            model.InitializeWeights();
            ModelFolder.Save(dir, model, config, null);
        }
        long weights = new FileInfo(Path.Combine(dir, ModelFolder.WeightsFile)).Length;
        long cap = weights / 4;
        Console.WriteLine($"model: {configPath} widths with {layers} layers (random weights), {weights / 1e6:F1} MB of float32 weights; cap {cap / 1e6:F1} MB (a quarter); "
            + $"{steps} greedy steps after an 8-token prompt; load average {LoadAverage()}");
        Console.WriteLine("run | resident layers | batch 1 tok/s | batch 8 tok/s | weights in memory at most MB | peak RSS (VmHWM) MB | peak RSS − weights MB");
        string? tokens = null;
        foreach (var run in new[] { "in memory", "streamed" })
        {
            var fields = Child(dir, run == "streamed" ? cap : 0, steps);
            tokens ??= fields["tokens"];
            if (fields["tokens"] != tokens) throw new InvalidOperationException($"streamed greedy tokens differ from in memory: {fields["tokens"]} vs {tokens}");
            double inMemory = run == "streamed" ? double.Parse(fields["weights"]) : weights / 1e6;
            Console.WriteLine($"{run} | {fields["resident"]} | {fields["b1"]} | {fields["b8"]} | {inMemory:F1} | {fields["peak"]} | {double.Parse(fields["peak"]) - inMemory:F1}");
        }
        Console.WriteLine("greedy tokens identical in both runs (batch 1 and 8)");
        return 0;
    }

    /// <summary>In a child process: load (streamed when cap &gt; 0), decode at batch 1 and 8, report speed, tokens and VmHWM.</summary>
    public static int RunOffloadChild(string[] args)
    {
        var (dir, cap, steps) = (args[0], long.Parse(args[1]), int.Parse(args[2]));
        OffloadPlan? plan = null;
        using var loaded = cap > 0 ? OffloadedModel.Load(dir, null, cap, out plan) : ModelFolder.Load(dir);
        var lm = loaded.AsCausalLM("bench");
        var b1 = Decode(lm, 1, steps);
        var b8 = Decode(lm, 8, steps);
        string resident = plan is not null ? $"{plan.ResidentLayers} of {plan.LayerCount}" : "all";
        Console.WriteLine($"resident={resident.Replace(' ', '_')} b1={b1.TokensPerSecond:F1} b8={b8.TokensPerSecond:F1} weights={(plan?.PeakWeightBytes ?? 0) / 1e6:F1} peak={StatusMb("VmHWM"):F1} tokens={b1.Tokens},{b8.Tokens}");
        return 0;
    }

    private static Dictionary<string, string> Child(string dir, long cap, int steps)
    {
        var start = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, UseShellExecute = false };
        if (Path.GetFileNameWithoutExtension(Environment.ProcessPath!) == "dotnet")
            start.ArgumentList.Add(typeof(CompressionBench).Assembly.Location);
        foreach (var a in new[] { "offload-child", dir, cap.ToString(), steps.ToString() }) start.ArgumentList.Add(a);
        using var child = Process.Start(start)!;
        var output = child.StandardOutput.ReadToEnd();
        child.WaitForExit();
        if (child.ExitCode != 0) throw new InvalidOperationException($"offload-child exited with {child.ExitCode}: {output}");
        return output.Trim().Split('\n')[^1].Split(' ').Select(f => f.Split('=', 2)).ToDictionary(kv => kv[0], kv => kv[1].Replace('_', ' '));
    }

    /// <summary>Greedy decode tokens/s (all sequences together), best of three runs, and the tokens of the last run.</summary>
    private static (double TokensPerSecond, string Tokens) Decode(CausalLM model, int batch, int steps)
    {
        double best = 0;
        var produced = new List<long>();
        using var prompt = arange(1, 8 * batch + 1, dtype: ScalarType.Int64).reshape(batch, 8) * 37 % 1000;
        for (int run = 0; run < 3; run++)
        {
            produced.Clear();
            best = Math.Max(best, GreedyDecode.Time(model, prompt, steps, onToken: token => produced.Add(token[0, 0].item<long>())).TokensPerSecond);
        }
        return (best, string.Join(":", produced));
    }

    /// <summary>Every 500th tang/song poem, <paramref name="count"/> of them: a spread the brief pretraining saw ~1% of.</summary>
    private static List<string> ValidationPoems(int count) =>
        Corpus.Open("chinese-poetry", new CorpusOptions(Poetry: new PoetryCorpusOptions(PoetryCollections.Tang | PoetryCollections.Song)))
            .Where((_, i) => i % 500 == 499).Take(count).ToList();

    private static double StatusMb(string field) =>
        File.ReadLines("/proc/self/status").Where(l => l.StartsWith(field + ":")).Select(l => double.Parse(l.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) / 1024).First();

    private static string LoadAverage() => File.ReadAllText("/proc/loadavg").Split(' ')[0];
}
