using System.Diagnostics;
using TianGong.Models;
using TianGong.Models.Layers;
using TianGong.Training;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Bench;

/// <summary>
/// The decode matmul kernel (<see cref="DecodeMatmul"/>) against libtorch on each projection shape of a decode step,
/// side by side in one run, with the machine's fp32 matmul peak and STREAM triad measured in the same run (issue 12).
/// Each product cycles through ~96 MB of weight copies, so the weight comes from memory, as in a decode step of a model
/// larger than the cache. Rows: (in, out) layout (GPT-2's Conv1D: libtorch addmm) and (out, in) layout (nn.Linear and
/// the tied head: libtorch F.linear, and for the head also the transposed product TiedHead used for 2–64 rows); the
/// kernel with one thread and with the torch thread count. Interleaved rounds, best of each.
/// </summary>
internal static class DecodeMatmulBench
{
    public static int Run(string[] args)
    {
        string configPath = args.Length > 0 ? args[0] : "configs/poetry-small.json";
        int threads = args.Length > 1 ? int.Parse(args[1]) : 2;
        int[] batches = args.Length > 2 ? args[2].Split(',').Select(int.Parse).ToArray() : [1, 4, 16, 32];
        int rounds = args.Length > 3 && !args[3].StartsWith("--") ? int.Parse(args[3]) : 3;
        // --kernel-only: the kernel alone on the products a GPT-2 decode step makes ((in, out) projections, (out, in)
        // head), without libtorch or the peak and STREAM runs: a quicker run for comparing two builds of the kernel.
        bool kernelOnly = args.Contains("--kernel-only");
        // --cached: one weight copy, so it comes from the cache (the head's 32 MB from L3): the kernel's compute rate.
        int used = args.Contains("--cached") ? 1 : 0;
        // --head N: the head's output rows (vocabulary) instead of 16384; with --cached, a small N keeps W in L1 or L2.
        int head = args.SkipWhile(a => a != "--head").Skip(1).Select(int.Parse).FirstOrDefault(16384);
        // --only NAME: the shapes whose name starts with NAME ("lm", "mlp", ...), for a quicker comparison of one product.
        string only = args.SkipWhile(a => a != "--only").Skip(1).FirstOrDefault("");
        set_num_threads(threads);
        Console.WriteLine($"load average at start: {ProfileBench.LoadAverage()}");
        var config = PretrainConfig.Load(configPath).Model.WithTokenizer(16384, 0, 0);
        long c = config.ModelWidth;
        if (!kernelOnly) Console.WriteLine($"torch threads {threads}; fp32 matmul peak (2048^3): {ProfileBench.MatmulPeakGflops():F1} GFLOP/s; "
            + $"STREAM triad (256 MB, {threads} threads): {StreamBench.Bandwidth(256, threads).Triad:F1} GB/s");
        var shapes = Shapes(config.ModelWidth).Append(("lm head", c, head));
        Console.WriteLine("shape | layout | rows | libtorch µs (GB/s, GFLOP/s) | kernel 1 thread | kernel " + threads + " threads | speed-up (" + threads + " threads) | max |diff|");
        using var _ = no_grad();
        foreach (var (name, inF, outF) in shapes)
            foreach (bool inOut in new[] { true, false })
                foreach (int rows in batches)
                {
                    if ((kernelOnly && inOut == (name == "lm head")) || !name.StartsWith(only)) continue;
                    using var scope = NewDisposeScope();
                    int copies = (int)Math.Max(2, 96L * 1024 * 1024 / (inF * outF * 4));
                    var w = Enumerable.Range(0, copies).Select(_ => inOut ? randn(inF, outF) : randn(outF, inF)).ToArray();
                    var bias = name == "lm head" ? null : randn(outF);
                    var x = randn(rows, inF);
                    Func<int, Tensor> torchOp = inOut
                        ? i => bias is null ? x.matmul(w[i]) : addmm(bias, x, w[i], beta: 1, alpha: 1)
                        : i => F.linear(x, w[i], bias);
                    Func<int, Tensor>? transposed = !inOut && name == "lm head" ? i => w[i].mm(x.t()).t().contiguous() : null;
                    Func<int, Tensor> kernelOp = inOut
                        ? i => DecodeMatmul.TryInOut(x, w[i], bias) ?? throw new InvalidOperationException("kernel did not apply")
                        : i => DecodeMatmul.TryOutIn(x, w[i], bias) ?? throw new InvalidOperationException("kernel did not apply");
                    double diff;
                    using (var a = torchOp(0))
                    using (var b = kernelOp(0))
                        diff = (a - b).abs().max().item<float>();
                    double lib = 0, tr = 0, k1 = 0, kn = 0, cpu1 = 0;
                    for (int r = 0; r < rounds; r++)
                    {
                        if (!kernelOnly) lib = Min(lib, Time(torchOp, copies));
                        if (transposed is not null && !kernelOnly) tr = Min(tr, Time(transposed, copies));
                        set_num_threads(1);
                        // One thread runs the kernel on the calling thread alone, so the process's CPU time is the
                        // kernel's: unlike the wall clock it leaves out the time other processes held the core.
                        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
                        var calls = Calls(copies);
                        k1 = Min(k1, Time(kernelOp, copies, used));
                        cpu1 = Min(cpu1, (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds / (calls + copies));
                        set_num_threads(threads);
                        kn = Min(kn, Time(kernelOp, copies, used));
                    }
                    double bytes = inF * outF * 4.0, flops = 2.0 * rows * inF * outF;
                    string Cell(double sec) => $"{sec * 1e6:F1} ({bytes / sec / 1e9:F1}, {flops / sec / 1e9:F1})";
                    double libBest = kernelOnly ? kn : tr > 0 ? Math.Min(lib, tr) : lib;
                    string libCell = kernelOnly ? "-" : tr > 0 ? $"{Cell(lib)}; transposed {Cell(tr)}" : Cell(lib);
                    Console.WriteLine($"{name} {inF}→{outF} | {(inOut ? "(in,out)" : "(out,in)")} | {rows} | {libCell} | {Cell(k1)}{(kernelOnly ? $", CPU {cpu1 * 1e6:F1} µs" : "")} | {Cell(kn)} | {libBest / kn:F2}× | {diff:E1}");
                }
        Console.WriteLine($"load average at end: {ProfileBench.LoadAverage()}");
        return 0;
    }

    /// <summary>The projections of a GPT-2 decoder block of this width, (in, out) features: what a decode step multiplies.</summary>
    internal static IEnumerable<(string Name, long In, long Out)> Shapes(long width) =>
        [("qkv", width, 3 * width), ("attn proj", width, width), ("mlp up", width, 4 * width), ("mlp down", 4 * width, width)];

    /// <summary>
    /// Seconds per call, cycling through the first <paramref name="used"/> of <paramref name="copies"/> weight copies
    /// (all of them by default: weights from memory; one: from cache), after a warm-up pass; at least
    /// <paramref name="minCalls"/> calls.
    /// </summary>
    internal static double Time(Func<int, Tensor> op, int copies, int used = 0, int minCalls = 40)
    {
        if (used <= 0) used = copies;
        for (int i = 0; i < copies; i++) op(i % used).Dispose();
        int n = Calls(copies, minCalls);
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < n; i++) op(i % used).Dispose();
        return clock.Elapsed.TotalSeconds / n;
    }

    /// <summary>Timed calls of <see cref="Time"/> (after its warm-up pass over the copies).</summary>
    private static int Calls(int copies, int minCalls = 40) => Math.Max(copies * 2, minCalls);

    /// <summary>The better of a best-so-far time (0: none yet) and a new one.</summary>
    internal static double Min(double best, double t) => best == 0 ? t : Math.Min(best, t);
}
