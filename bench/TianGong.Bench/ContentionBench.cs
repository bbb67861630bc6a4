using System.Diagnostics;
using System.Text.RegularExpressions;

namespace TianGong.Bench;

/// <summary>
/// For the performance issue's "contention collapse": training and batch-1 decode speed with 2 torch threads, quiet and
/// with a competing busy process pinned to core 1 (<c>taskset -c 1</c> running a spin loop), under libgomp's default
/// wait policy (spin 300,000 iterations, what libtorch did before TianGong set a policy: GOMP_SPINCOUNT=300000 reproduces
/// it) and under OMP_WAIT_POLICY=PASSIVE (TianGong's default, <see cref="TorchRuntime"/>). Each measurement is a fresh
/// child process running <c>training</c>, because libgomp reads the policy once, when it loads.
/// </summary>
public static partial class ContentionBench
{
    public static int Run(string[] args)
    {
        var config = args.FirstOrDefault() ?? "configs/poetry-tiny.json";
        var steps = args.Length > 1 ? args[1] : "5";
        Console.WriteLine($"machine: {Environment.ProcessorCount} cores; load average at start: {LoadAverage()}; model {config}, {steps} steps, 2 torch threads");
        Console.WriteLine("wait policy | competing load | training tok/s | decode batch 1 tok/s");
        var results = new Dictionary<(string, bool), (double Train, double Decode)>();
        foreach (var (policy, env) in new[] { ("libgomp default", ("GOMP_SPINCOUNT", "300000")), ("PASSIVE", ("OMP_WAIT_POLICY", "PASSIVE")) })
            foreach (bool busy in new[] { false, true })
            {
                using var spinner = busy ? Process.Start(new ProcessStartInfo("taskset", ["-c", "1", "sh", "-c", "while :; do :; done"])) : null;
                var r = Child(config, steps, env);
                spinner?.Kill();
                results[(policy, busy)] = r;
                Console.WriteLine($"{policy} | {(busy ? "spin loop on core 1" : "none")} | {r.Train:N0} | {r.Decode:N0}");
            }
        foreach (var policy in new[] { "libgomp default", "PASSIVE" })
            Console.WriteLine($"{policy}: under load {results[(policy, true)].Train / results[(policy, false)].Train:P0} of its quiet training speed, "
                + $"{results[(policy, true)].Decode / results[(policy, false)].Decode:P0} of its quiet decode speed");
        // One torch thread beside the busy core: what a user who knows the core is taken would set (OMP_NUM_THREADS=1).
        using (var spinner = Process.Start(new ProcessStartInfo("taskset", ["-c", "1", "sh", "-c", "while :; do :; done"])))
        {
            var one = Child(config, steps, ("OMP_WAIT_POLICY", "PASSIVE"), threads: "1");
            spinner?.Kill();
            Console.WriteLine($"PASSIVE, 1 torch thread | spin loop on core 1 | {one.Train:N0} | {one.Decode:N0}");
            Console.WriteLine($"PASSIVE, 1 thread under load: {one.Train / results[("PASSIVE", false)].Train:P0} of the quiet 2-thread training speed, "
                + $"{one.Decode / results[("PASSIVE", false)].Decode:P0} of its decode speed");
        }
        Console.WriteLine($"PASSIVE vs default, quiet: training {results[("PASSIVE", false)].Train / results[("libgomp default", false)].Train:P0}, "
            + $"decode {results[("PASSIVE", false)].Decode / results[("libgomp default", false)].Decode:P0}");
        Console.WriteLine($"load average at end: {LoadAverage()}");
        return 0;
    }

    private static (double Train, double Decode) Child(string config, string steps, (string Name, string Value) env, string threads = "2")
    {
        var start = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, UseShellExecute = false };
        if (Path.GetFileNameWithoutExtension(Environment.ProcessPath!) == "dotnet")
            start.ArgumentList.Add(typeof(ContentionBench).Assembly.Location);
        foreach (var a in new[] { "training", config, steps, threads }) start.ArgumentList.Add(a);
        start.Environment.Remove("OMP_WAIT_POLICY");
        start.Environment.Remove("GOMP_SPINCOUNT");
        start.Environment[env.Name] = env.Value;
        using var child = Process.Start(start)!;
        var output = child.StandardOutput.ReadToEnd();
        child.WaitForExit();
        if (child.ExitCode != 0) throw new InvalidOperationException($"training bench exited with {child.ExitCode}: {output}");
        double Read(Regex pattern) => double.Parse(pattern.Match(output).Groups[1].Value.Replace(",", ""));
        return (Read(TrainingLine()), Read(DecodeLine()));
    }

    [GeneratedRegex(@"training: ([\d,.]+) tokens/s")]
    private static partial Regex TrainingLine();

    [GeneratedRegex(@"decode batch 1: ([\d,.]+) tokens/s")]
    private static partial Regex DecodeLine();

    private static string LoadAverage() => string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3));
}
