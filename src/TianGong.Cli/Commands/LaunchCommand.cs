using System.CommandLine;
using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;
using TianGong.Parallelism.Communication;
using TianGong.Parallelism.TensorParallel;

namespace TianGong.Cli.Commands;

/// <summary>
/// <c>tiangong launch -n N [--hostfile FILE] -- pretrain ... --parallel dp=2</c>: runs a command as N ranks under
/// Open MPI's mpirun. Each rank runs this CLI again as <c>launch --as-rank -- COMMAND</c>, which prefixes its output
/// with its rank and then runs COMMAND; the command itself finds the job through MPI (<c>--parallel</c>).
/// </summary>
internal static partial class LaunchCommand
{
    public static Command Create()
    {
        var processes = new Option<int>("-n", "--np") { Description = "Number of processes (ranks); must equal dp × tp × pp of --parallel", DefaultValueFactory = _ => 2 };
        var hostfile = new Option<string?>("--hostfile") { Description = "Open MPI hostfile (one host per line, with slots=K) for a multi-node job" };
        var mpirunArgs = new Option<string[]>("--mpirun-arg") { Description = "An extra argument for mpirun (repeatable), e.g. --mpirun-arg=--mca --mpirun-arg=btl_tcp_if_include --mpirun-arg=eth0" };
        var asRank = new Option<bool>("--as-rank") { Hidden = true, Description = "Internal: this process is one rank started by mpirun" };
        var check = new Option<bool>("--check") { Description = "Instead of a command, check every collective (all-reduce, all-gather, reduce-scatter, all-to-all, send/receive, split) on each rank" };
        var command = new Argument<string[]>("command") { Arity = ArgumentArity.ZeroOrMore, Description = "The TianGong command each rank runs, after --, e.g. -- pretrain --config poetry-tiny --parallel dp=2" };
        var launch = new Command("launch", "Run a TianGong command on N processes under mpirun (data parallelism: --parallel dp=N)") { processes, hostfile, mpirunArgs, check, asRank, command };
        launch.SetAction((parse, cancel) =>
        {
            var args = parse.GetValue(check) ? [CheckCollectives] : parse.GetValue(command) ?? [];
            if (args.Length == 0) return Task.FromResult(CliRunner.Run(() => throw new TianGongException("launch: give the command each rank runs after --, e.g. launch -n 2 -- pretrain --config poetry-tiny --parallel dp=2 (or --check)")));
            if (parse.GetValue(asRank)) return RunAsRank(parse.RootCommandResult.Command, args, cancel);
            return Task.FromResult(CliRunner.Run(() => RunMpirun(parse.GetValue(processes), parse.GetValue(hostfile), parse.GetValue(mpirunArgs) ?? [], args, cancel)));
        });
        return launch;
    }

    private const string CheckCollectives = "check-collectives"; // what --check runs on each rank

    /// <summary>The launcher: mpirun with this CLI as the program, its output passed through, its exit code returned.</summary>
    private static int RunMpirun(int n, string? hostfile, string[] extra, string[] args, CancellationToken cancel)
    {
        if (n < 1) throw new TianGongException($"-n: must be at least 1, got {n}");
        if (args is ["launch", ..]) throw new TianGongException("launch: the command after -- cannot be launch itself");
        if (hostfile is not null && !File.Exists(hostfile)) throw new TianGongException($"--hostfile: {hostfile} not found");
        var mpirun = FindMpirun() ?? throw new TianGongException(
            "launch: mpirun not found; install Open MPI (Debian: apt-get install openmpi-bin libopenmpi-dev; ./tiangong launch installs it)");

        var psi = new ProcessStartInfo(mpirun) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in MpirunArguments(n, hostfile, extra, Environment.UserName == "root" || IsRoot(), Environment.ProcessorCount))
            psi.ArgumentList.Add(a);
        // mpirun gives local ranks a pseudo-terminal; with a real TERM, .NET's console writes terminal-mode escapes into the log.
        psi.Environment["TERM"] = "dumb";
        foreach (var a in SelfCommand()) psi.ArgumentList.Add(a);
        psi.ArgumentList.Add("launch");
        psi.ArgumentList.Add("--as-rank");
        psi.ArgumentList.Add("--");
        foreach (var a in args) psi.ArgumentList.Add(a);

        using var process = Process.Start(psi)!;
        var failures = new FailedRanks();
        var stdout = Pump(process.StandardOutput, Console.Out, failures);
        var stderr = Pump(process.StandardError, Console.Error, failures);
        // Ctrl-C reaches mpirun (and, in a terminal, the ranks): a rank that sees it makes all stop after the same step
        // (the trainer agrees on stopping); mpirun itself ends the job on SIGINT, leaving the last complete checkpoint.
        process.WaitForExit();
        Task.WaitAll(stdout, stderr);
        const int Interrupted = 130; // every rank stopped together after a checkpoint: not a failure
        if (process.ExitCode is not (0 or Interrupted) && failures.Describe() is { } which)
            Console.Error.WriteLine($"error: the job failed: {which} (mpirun exit code {process.ExitCode})");
        return process.ExitCode;
    }

    /// <summary>
    /// mpirun's options: the ranks, --allow-run-as-root when root (Open MPI refuses root otherwise), --oversubscribe when
    /// more ranks than cores, no core binding (each rank runs torch's own threads), and the environment TianGong reads.
    /// </summary>
    internal static List<string> MpirunArguments(int n, string? hostfile, IReadOnlyList<string> extra, bool root, int cores)
    {
        var a = new List<string> { "-n", n.ToString() };
        if (hostfile is not null) a.AddRange(["--hostfile", hostfile]);
        if (root) a.Add("--allow-run-as-root");
        if (hostfile is null && n > cores) a.Add("--oversubscribe");
        a.AddRange(["--bind-to", "none"]);
        // Forwarded to remote hosts too (local ranks inherit the whole environment anyway).
        foreach (var name in new[] { "TIANGONG_HOME", "TIANGONG_OFFLINE", "DOTNET_ROOT", "NO_COLOR", "COLUMNS" })
            if (Environment.GetEnvironmentVariable(name) is not null) a.AddRange(["-x", name]);
        a.AddRange(extra);
        return a;
    }

    /// <summary>How to start this CLI again: the apphost, or dotnet plus the assembly when run as <c>dotnet TianGong.Cli.dll</c>.</summary>
    private static string[] SelfCommand()
    {
        var process = Environment.ProcessPath ?? throw new TianGongException("launch: cannot tell which program is running");
        return Path.GetFileNameWithoutExtension(process) == "dotnet" ? [process, typeof(LaunchCommand).Assembly.Location] : [process];
    }

    private static string? FindMpirun()
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(dir, "mpirun");
            if (File.Exists(candidate)) return candidate;
        }
        return null;
    }

    private static bool IsRoot() => OperatingSystem.IsLinux() && File.Exists("/proc/self/status") &&
        File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("Uid:"))?.Split('\t', StringSplitOptions.RemoveEmptyEntries) is [_, "0", ..];

    private static Task Pump(StreamReader from, TextWriter to, FailedRanks failures) => Task.Run(() =>
    {
        while (from.ReadLine() is { } line)
        {
            failures.Observe(line);
            to.WriteLine(line);
            to.Flush();
        }
    });

    /// <summary>
    /// One rank: its output lines carry "[rank R] ", then the command runs as if typed (same parser, same commands).
    /// The command finds out through MPI which rank it is; this prefix only comes from Open MPI's environment.
    /// </summary>
    private static Task<int> RunAsRank(Command root, string[] args, CancellationToken cancel)
    {
        var rank = Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_RANK") ?? Environment.GetEnvironmentVariable("PMIX_RANK") ?? "?";
        Console.SetOut(TextWriter.Synchronized(new RankPrefixWriter(Console.Out, $"[rank {rank}] ")));
        Console.SetError(TextWriter.Synchronized(new RankPrefixWriter(Console.Error, $"[rank {rank}] ")));
        if (args is [CheckCollectives]) return Task.FromResult(CliRunner.Run(RunCollectiveCheck));
        return root.Parse(args, new ParserConfiguration { ResponseFileTokenReplacer = null }).InvokeAsync(cancellationToken: cancel);
    }

    private static int RunCollectiveCheck()
    {
        using var world = MpiCommunicator.InitWorld(TimeSpan.FromSeconds(60));
        foreach (var line in CollectiveCheck.Run(world)) Console.WriteLine(line);
        foreach (var line in TensorParallelCheck.Run(world)) Console.WriteLine(line); // the tensor-parallel layers over the whole job
        Console.WriteLine(CollectiveCheck.BusBandwidth(world, TorchSharp.torch.CPU, 16L << 20, TorchSharp.torch.ScalarType.Float32));
        Console.WriteLine($"all collectives correct on rank {world.Rank} of {world.Size}");
        return 0;
    }

    /// <summary>Collects which ranks mpirun or the collective watchdog reported as failed, for one closing line.</summary>
    private sealed partial class FailedRanks
    {
        private readonly SortedSet<int> ranks = [];
        private readonly Lock gate = new();

        public void Observe(string line)
        {
            // mpirun: "Process name: [[4518,1],1]" / "rank 1 with PID 1234 on node x exited on signal 9"; the watchdog: "error: rank 1: ..."
            var m = ProcessName().Match(line);
            if (!m.Success) m = RankExited().Match(line);
            if (!m.Success) m = WatchdogRank().Match(line);
            if (m.Success)
                lock (gate) ranks.Add(int.Parse(m.Groups["rank"].Value));
        }

        public string? Describe()
        {
            lock (gate) return ranks.Count == 0 ? null : (ranks.Count == 1 ? "rank " : "ranks ") + string.Join(", ", ranks);
        }

        [GeneratedRegex(@"Process name:\s*\[\[\d+,\d+\],(?<rank>\d+)\]")]
        private static partial Regex ProcessName();

        [GeneratedRegex(@"\brank (?<rank>\d+) with PID \d+ on node \S+ exited")]
        private static partial Regex RankExited();

        [GeneratedRegex(@"error: rank (?<rank>\d+): ")]
        private static partial Regex WatchdogRank();
    }

    /// <summary>
    /// Writes "[rank R] " at the start of every line, and hands the inner writer whole lines only: mpirun forwards each
    /// rank's output in the chunks it was written in, so a line written piecewise could be cut by another rank's.
    /// </summary>
    private sealed class RankPrefixWriter(TextWriter inner, string prefix) : TextWriter
    {
        private readonly StringBuilder line = new();

        public override Encoding Encoding => inner.Encoding;

        public override void Write(char value)
        {
            if (line.Length == 0 && value != '\n') line.Append(prefix);
            line.Append(value);
            if (value == '\n') Emit();
        }

        public override void Write(string? value)
        {
            foreach (char c in value ?? "") Write(c);
        }

        public override void WriteLine(string? value)
        {
            Write(value);
            Write('\n');
        }

        /// <summary>A flush also sends a line still being written (a prompt, the last words before exit).</summary>
        public override void Flush()
        {
            if (line.Length > 0) Emit();
            inner.Flush();
        }

        private void Emit()
        {
            inner.Write(line.ToString());
            inner.Flush();
            line.Clear();
        }
    }
}
