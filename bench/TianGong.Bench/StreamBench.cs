using System.Diagnostics;
using System.Numerics;
using System.Runtime.InteropServices;
using TianGong.Checkpoints;
using TianGong.Compression.Quantization;
using TianGong.Models;
using TianGong.Training;
using static TorchSharp.torch;

namespace TianGong.Bench;

/// <summary>
/// Decode against the memory limit. First this machine's memory bandwidth, STREAM-style (McCalpin's copy
/// <c>c = a</c> and triad <c>a = b + s·c</c> over arrays far larger than the caches, split over N threads, best of 5;
/// bytes counted as STREAM does, without write-allocate traffic). Then greedy batch-1 decode of a config's model
/// (random weights) in fp32, int8 (per channel) and int4 (group 128), and each as a fraction of its bandwidth bound:
/// a batch-1 step reads every weight once, so tokens/s cannot exceed bandwidth / (bytes of weights read per token).
/// </summary>
internal static class StreamBench
{
    public static int Run(string[] args)
    {
        int megabytes = args.Length > 0 ? int.Parse(args[0]) : 256;
        int threads = args.Length > 1 ? int.Parse(args[1]) : 2;
        string configPath = args.Length > 2 ? args[2] : "configs/poetry-small.json";
        int steps = args.Length > 3 ? int.Parse(args[3]) : 32;
        Console.WriteLine($"load average at start: {ProfileBench.LoadAverage()}");
        var (copy, triad) = Bandwidth(megabytes, threads);
        Console.WriteLine($"STREAM-style, {threads} threads, 3 arrays of {megabytes} MB: copy {copy:F2} GB/s, triad {triad:F2} GB/s");
        double bandwidth = Math.Max(copy, triad) * 1e9;

        set_num_threads(threads);
        var config = PretrainConfig.Load(configPath).Model.WithTokenizer(16384, 0, 0);
        var root = Path.Combine(Path.GetTempPath(), "tiangong-bench-stream");
        var fp32Dir = Path.Combine(root, "fp32");
        manual_seed(0);
        using (var model = ModelConfigs.CreateCausalLM(config))
        {
            model.InitializeWeights();
            ModelFolder.Save(fp32Dir, model, config, null);
        }
        Console.WriteLine($"model: {configPath} ({config.ModelType}, random weights, vocab 16384), torch threads {threads}; greedy batch-1 decode, {steps} steps after an 8-token prompt, best of 3");
        Console.WriteLine("variant | MB of weights read per token | decode tok/s | bound (bandwidth / bytes) tok/s | fraction of the bound");
        foreach (var (name, quantization) in QuantizationBench.Variants)
        {
            var dir = QuantizationBench.VariantFolder(fp32Dir, root, quantization);
            using var loaded = ModelFolder.Load(dir);
            var lm = loaded.AsCausalLM("bench");
            double bytes = BytesReadPerToken(lm);
            double tps = Decode(lm, steps);
            double bound = bandwidth / bytes;
            Console.WriteLine($"{name} | {bytes / 1e6:F1} | {tps:F1} | {bound:F1} | {tps / bound:P1}");
        }
        Console.WriteLine($"load average at end: {ProfileBench.LoadAverage()}");
        return 0;
    }

    /// <summary>Every parameter and buffer is read once per token, except the position table, of which one row is.</summary>
    private static double BytesReadPerToken(CausalLM model)
    {
        double total = 0;
        foreach (var (name, p) in model.named_parameters())
            total += name.EndsWith("wpe.weight") ? p.shape[1] * p.element_size() : p.numel() * p.element_size();
        foreach (var (_, b) in model.named_buffers()) total += b.numel() * b.element_size();
        return total;
    }

    private static double Decode(CausalLM model, int steps)
    {
        using var prompt = randint(0, 100, [1, 8]);
        return GreedyDecode.BestOfThree(model, prompt, steps);
    }

    /// <summary>Copy and triad GB/s, best of 5, each thread on its own contiguous part of the arrays.</summary>
    internal static (double Copy, double Triad) Bandwidth(int megabytes, int threads)
    {
        int n = megabytes * (1 << 20) / sizeof(float);
        var a = new float[n];
        var b = new float[n];
        var c = new float[n];
        Array.Fill(a, 1f);
        Array.Fill(b, 2f);
        Array.Fill(c, 0f);
        const float scalar = 3f;
        double copy = Best(() => Parts(i => a.AsSpan(i.Start, i.Length).CopyTo(c.AsSpan(i.Start, i.Length))), 2.0 * n * sizeof(float));
        double triad = Best(() => Parts(i => Triad(a.AsSpan(i.Start, i.Length), b.AsSpan(i.Start, i.Length), c.AsSpan(i.Start, i.Length), scalar)), 3.0 * n * sizeof(float));
        return (copy, triad);

        void Parts(Action<(int Start, int Length)> body)
        {
            int per = (n / threads) & ~63;
            var workers = Enumerable.Range(0, threads).Select(t =>
            {
                int start = t * per, length = t == threads - 1 ? n - start : per;
                var thread = new Thread(() => body((start, length)));
                thread.Start();
                return thread;
            }).ToList();
            foreach (var w in workers) w.Join();
        }

        static double Best(Action run, double bytes)
        {
            run();
            double best = double.MaxValue;
            for (int i = 0; i < 5; i++)
            {
                var clock = Stopwatch.StartNew();
                run();
                best = Math.Min(best, clock.Elapsed.TotalSeconds);
            }
            return bytes / best / 1e9;
        }
    }

    private static void Triad(Span<float> a, Span<float> b, Span<float> c, float scalar)
    {
        var av = MemoryMarshal.Cast<float, Vector<float>>(a);
        var bv = MemoryMarshal.Cast<float, Vector<float>>(b);
        var cv = MemoryMarshal.Cast<float, Vector<float>>(c);
        var s = new Vector<float>(scalar);
        for (int i = 0; i < av.Length; i++) av[i] = bv[i] + s * cv[i];
        for (int i = av.Length * Vector<float>.Count; i < a.Length; i++) a[i] = b[i] + scalar * c[i];
    }
}
