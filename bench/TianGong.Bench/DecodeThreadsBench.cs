using System.Diagnostics;
using TianGong.Models;
using TianGong.Models.Layers;
using TianGong.Training;
using static TorchSharp.torch;

namespace TianGong.Bench;

/// <summary>
/// The decode kernels' parallel regions on <see cref="DecodeThreads"/>' own team against Parallel.For on the .NET thread
/// pool (what they used before): the model's KV-cache decode step (<c>CausalLM.forward</c> + argmax, shared-length cache,
/// as DecodeProfileBench's model step) at each batch, the two paths alternating measurement by measurement in one
/// process (the order flipped every round, so drifting load hits both alike), quiet and, with <c>--busy</c>, with a
/// competing spin loop pinned to core 1 (<c>taskset -c 1</c>, as ContentionBench). Reports the median and best step.
/// </summary>
internal static class DecodeThreadsBench
{
    private const int Prompt = 8;

    public static int Run(string[] allArgs)
    {
        var args = allArgs.Where(a => !a.StartsWith("--", StringComparison.Ordinal)).ToArray();
        string configPath = args.Length > 0 ? args[0] : "configs/poetry-small.json";
        int steps = args.Length > 1 ? int.Parse(args[1]) : 32;
        int rounds = args.Length > 2 ? int.Parse(args[2]) : 7;
        int[] batches = args.Length > 3 ? args[3].Split(',').Select(int.Parse).ToArray() : [1, 16];
        bool[] loads = allArgs.Contains("--busy") ? [false, true] : [false];
        if (allArgs.Contains("--busy-only")) loads = [true];
        set_num_threads(2);
        using var model = BenchModels.RandomDecoder(configPath);
        using var _ = no_grad();
        var team = DecodeThreads.Shared;
        Console.WriteLine($"load average at start: {ProfileBench.LoadAverage()}; {Environment.ProcessorCount} cores, torch threads 2; "
            + $"model {configPath}, {model.ParameterCount() / 1e6:F1}M parameters, vocab 16384; {steps} steps after a {Prompt}-token prompt, "
            + $"{rounds} rounds; team spin {team.Spin.TotalMicroseconds:F0} µs");
        Regions(team);
        if (allArgs.Contains("--regions-only")) return 0;
        foreach (int batch in batches) { ModelStep(model, batch, 4); team.UsesThreadPool = true; ModelStep(model, batch, 4); team.UsesThreadPool = false; }
        var times = new Dictionary<(bool Busy, int Batch, bool Pool), List<double>>();
        for (int round = 0; round < rounds; round++)
            foreach (bool busy in loads)
            {
                using var spinner = busy ? Process.Start(new ProcessStartInfo("taskset", ["-c", "1", "sh", "-c", "while :; do :; done"])) : null;
                if (busy) Thread.Sleep(200);
                foreach (int batch in batches)
                    foreach (bool pool in round % 2 == 0 ? new[] { true, false } : [false, true])
                    {
                        team.UsesThreadPool = pool;
                        double seconds = ModelStep(model, batch, steps);
                        (times.TryGetValue((busy, batch, pool), out var list) ? list : times[(busy, batch, pool)] = []).Add(seconds);
                    }
                team.UsesThreadPool = false;
                spinner?.Kill();
                spinner?.WaitForExit();
            }
        Console.WriteLine("load | batch | Parallel.For median (best) ms | team median (best) ms | team speed-up (medians) | tok/s Parallel.For → team");
        foreach (bool busy in loads)
            foreach (int batch in batches)
            {
                var pool = times[(busy, batch, true)];
                var own = times[(busy, batch, false)];
                double pm = Median(pool), tm = Median(own);
                // Each round's pair was measured back to back: the median of the pairs' ratios is the least disturbed by drifting load.
                double paired = Median(pool.Zip(own, (p, t) => p / t).ToList());
                Console.WriteLine($"{(busy ? "spin loop on core 1" : "quiet")} | {batch} | {pm * 1e3:F2} ({pool.Min() * 1e3:F2}) | {tm * 1e3:F2} ({own.Min() * 1e3:F2}) | "
                    + $"{pm / tm:F3}× (pairs' median {paired:F3}×) | {batch / pm:F1} → {batch / tm:F1}");
            }
        if (loads.Length == 2)
            foreach (int batch in batches)
                Console.WriteLine($"batch {batch} under load, median tok/s as a share of quiet: Parallel.For {Median(times[(false, batch, true)]) / Median(times[(true, batch, true)]):P0}, "
                    + $"team {Median(times[(false, batch, false)]) / Median(times[(true, batch, false)]):P0}");
        Console.WriteLine($"load average at end: {ProfileBench.LoadAverage()}");
        return 0;
    }

    /// <summary>
    /// One region alone, each call timed: two shares of about 20 µs of arithmetic each (a small projection's share), with
    /// 0 or 100 µs of the calling thread's own work between regions (a decode step's norms and small ops), so that the
    /// workers are found spinning or asleep. Per path the median and the fastest tenth of 4,000 calls, in alternating
    /// blocks of 500.
    /// </summary>
    private static void Regions(DecodeThreads team)
    {
        float[] sink = new float[2];
        int caller = Environment.CurrentManagedThreadId, inline = 0;
        void Share(int i)
        {
            if (i == 1 && Environment.CurrentManagedThreadId == caller) inline++;
            float a = i + 1;
            for (int k = 0; k < 20_000; k++) a = a * 0.999f + 1f; // ~20 µs: a dependent chain, 4 cycles a step
            sink[i] = a;
        }
        foreach (int gapUs in new[] { 0, 100 })
        {
            var each = new Dictionary<bool, List<double>> { [true] = [], [false] = [] };
            var inlineOf = new Dictionary<bool, int> { [true] = 0, [false] = 0 };
            for (int block = 0; block < 8; block++)
            {
                bool pool = block % 2 == 0;
                team.UsesThreadPool = pool;
                inline = 0;
                for (int call = 0; call < 500; call++)
                {
                    if (gapUs > 0) { long until = Stopwatch.GetTimestamp() + gapUs * Stopwatch.Frequency / 1_000_000; while (Stopwatch.GetTimestamp() < until) { } }
                    long start = Stopwatch.GetTimestamp();
                    team.Run(2, Share);
                    each[pool].Add(Stopwatch.GetElapsedTime(start).TotalMicroseconds);
                }
                inlineOf[pool] += inline;
            }
            team.UsesThreadPool = false;
            double Tenth(List<double> v) => v.Order().ElementAt(v.Count / 10);
            Console.WriteLine($"one region of 2 × ~20 µs shares, {gapUs} µs between regions (µs, median / fastest tenth): "
                + $"Parallel.For {Median(each[true]):F1} / {Tenth(each[true]):F1}, team {Median(each[false]):F1} / {Tenth(each[false]):F1}; "
                + $"second share run by the caller: Parallel.For {inlineOf[true] / 2000.0:P0}, team {inlineOf[false] / 2000.0:P0}");
        }
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    /// <summary>Seconds per decode step: a prompt, then <paramref name="steps"/> one-token steps with the KV cache.</summary>
    private static double ModelStep(CausalLM model, int batch, int steps)
    {
        using var cache = model.CreateCache(batch, Prompt + steps + 1);
        using var prompt = randint(0, 100, [batch, Prompt]);
        var next = model.forward(prompt, cache).select(1, -1).argmax(-1).unsqueeze(1);
        var clock = Stopwatch.StartNew();
        for (int s = 0; s < steps; s++)
        {
            using var scope = NewDisposeScope();
            var token = model.forward(next, cache).select(1, -1).argmax(-1).unsqueeze(1);        // (B, 1)
            next.Dispose();
            next = token.MoveToOuterDisposeScope();
        }
        double seconds = clock.Elapsed.TotalSeconds / steps;
        next.Dispose();
        return seconds;
    }
}
