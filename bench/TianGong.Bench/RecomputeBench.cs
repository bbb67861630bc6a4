using System.Diagnostics;
using TianGong.Models;
using TianGong.Models.Layers;
using TianGong.Models.Llama;
using TianGong.Parallelism.Pipeline;
using TianGong.Training;
using static TorchSharp.torch;

namespace TianGong.Bench;

/// <summary>
/// Recomputation's price and saving: peak resident memory and time of a training step (forward, loss, backward) of one
/// Llama-shaped model with recompute none, selective and full. Each mode runs in a fresh process (the peak RSS, VmHWM,
/// only grows), started by the parent; the figure is the peak's rise over the step, after a warm-up step made every
/// gradient buffer, so it is the activations' memory and the allocator's slack.
/// </summary>
public static class RecomputeBench
{
    /// <summary>recompute [hidden=256] [layers=8] [seq=512] [batch=8] [threads=2]</summary>
    public static int Run(string[] args)
    {
        Console.WriteLine($"machine: {Environment.ProcessorCount} cores; load average at start: {LoadAverage()}");
        Console.WriteLine("| recompute | peak RSS rise over a step | step time (median of 3) | loss |");
        Console.WriteLine("|---|---|---|---|");
        foreach (var mode in new[] { "none", "selective", "full" })
        {
            var child = Process.Start(new ProcessStartInfo(Environment.ProcessPath!, ["recompute-child", mode, .. args]) { RedirectStandardOutput = true })!;
            Console.WriteLine(child.StandardOutput.ReadToEnd().TrimEnd());
            child.WaitForExit();
            if (child.ExitCode != 0) return child.ExitCode;
        }
        Console.WriteLine($"load average at end: {LoadAverage()}");
        return 0;
    }

    public static int RunChild(string[] args)
    {
        var mode = Recomputation.Parse(args[0]);
        int Arg(int i, int fallback) => args.Length > i ? int.Parse(args[i]) : fallback;
        int hidden = Arg(1, 256), layers = Arg(2, 8), seq = Arg(3, 512), batch = Arg(4, 8);
        set_num_threads(Arg(5, 2));
        manual_seed(1);
        var config = new LlamaConfig(VocabSize: 512, HiddenSize: hidden, IntermediateSize: hidden * 8 / 3, NumHiddenLayers: layers,
            NumAttentionHeads: hidden / 64, NumKeyValueHeads: hidden / 64, MaxPositionEmbeddings: seq, RmsNormEps: 1e-5, BosTokenId: 0, EosTokenId: 0);
        using var lm = new LlamaForCausalLM(config);
        lm.InitializeWeights();
        lm.train();
        using var stage = new PipelineStage(lm, 0, 1, (0, layers), mode);
        double Step(int rows)
        {
            using var scope = NewDisposeScope();
            var ids = randint(0, 512, [rows, seq]);
            var loss = LanguageModeling.Loss(stage.Forward(ids), ids);
            loss.backward();
            foreach (var p in lm.parameters()) p.grad?.zero_();
            return loss.item<float>();
        }
        Step(1); // gradient buffers and libtorch's workspaces exist from here on
        long before = StatusKb("VmHWM");
        var times = new List<double>();
        double loss = 0;
        for (int i = 0; i < 3; i++)
        {
            var clock = Stopwatch.StartNew();
            loss = Step(batch);
            times.Add(clock.Elapsed.TotalSeconds);
        }
        long rise = StatusKb("VmHWM") - before;
        Console.WriteLine($"| {args[0]} | {rise / 1024.0:F0} MiB | {times.Order().ElementAt(1):F2} s | {loss:F4} |");
        return 0;
    }

    private static long StatusKb(string field)
    {
        var line = File.ReadLines("/proc/self/status").First(l => l.StartsWith(field + ":"));
        return long.Parse(line[(field.Length + 1)..].Trim().Split(' ')[0]);
    }

    private static string LoadAverage() => string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3));
}
