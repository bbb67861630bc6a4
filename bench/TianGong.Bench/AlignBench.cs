using System.Diagnostics;
using TianGong.Checkpoints;
using TianGong.Models;
using TianGong.Models.Gpt2;
using TianGong.Models.Layers;

namespace TianGong.Bench;

/// <summary>
/// What <see cref="DecodeMatmul.AlignWeights"/> costs the serving engine at start-up: a ~500M-parameter GPT-2 (22×1280,
/// vocab 50257, random weights) saved once to a temp folder, then loaded (its matrices mapped from the file) and aligned,
/// three times, beside the load time and the bytes of matrices moved.
/// </summary>
internal static class AlignBench
{
    public static int Run(string[] args)
    {
        var dir = Path.Combine(Path.GetTempPath(), "tiangong-bench-align", "gpt2-500m");
        Console.WriteLine($"load average at start: {ProfileBench.LoadAverage()}");
        if (!File.Exists(Path.Combine(dir, "model.safetensors")))
        {
            var config = new Gpt2Config(VocabSize: 50257, NPositions: 1024, NEmbd: 1280, NLayer: 22, NHead: 20);
            using var model = ModelConfigs.CreateCausalLM(config);
            ModelFolder.Save(dir, model, config, tokenizer: null);
        }
        for (int round = 0; round < 3; round++)
        {
            // No collection between rounds: disposing the last round's model freed its memory (the rounds' lines show it).
            Console.WriteLine($"before round {round + 1}: {Memory()}");
            var clock = Stopwatch.StartNew();
            using var loaded = ModelFolder.Load(dir);
            double load = clock.Elapsed.TotalSeconds;
            clock.Restart();
            int moved = DecodeMatmul.AlignWeights(loaded.Module);
            double align = clock.Elapsed.TotalSeconds;
            long bytes = loaded.Module.parameters().Where(p => p.dim() == 2).Sum(p => p.numel() * p.element_size());
            string huge = File.ReadLines("/proc/meminfo").FirstOrDefault(l => l.StartsWith("AnonHugePages", StringComparison.Ordinal)) ?? "AnonHugePages: n/a";
            Console.WriteLine($"round {round + 1}: load {load:F2} s; AlignWeights {align:F2} s, {moved} matrices, {bytes / 1e9:F2} GB of matrices; {huge}");
        }
        Console.WriteLine($"after the last round: {Memory()}");
        Console.WriteLine($"load average at end: {ProfileBench.LoadAverage()}");
        return 0;
    }

    /// <summary>This process's resident anonymous and file-backed memory, and the machine's anonymous huge pages.</summary>
    private static string Memory() => string.Join(", ", File.ReadLines("/proc/self/status").Where(l => l.StartsWith("RssAnon", StringComparison.Ordinal) || l.StartsWith("RssFile", StringComparison.Ordinal))
        .Append(File.ReadLines("/proc/meminfo").FirstOrDefault(l => l.StartsWith("AnonHugePages", StringComparison.Ordinal)) ?? "AnonHugePages: n/a")
        .Select(l => System.Text.RegularExpressions.Regex.Replace(l, @"\s+", " ")));
}
