using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using System.Text;
using System.Text.Json;
using TianGong.Checkpoints;
using TianGong.Tests.Cli;
using TianGong.Tests.Training;
using TianGong.Training;

using static TianGong.Tests.Parallel.SameTraining;

namespace TianGong.Tests.Parallel;

/// <summary>
/// Real 2-rank jobs under Open MPI's mpirun, started as a user would (<c>tiangong launch -n 2 -- ...</c>), compared
/// with one process in this test: same losses, same saved model. Each job takes a few seconds (two CLI processes).
/// </summary>
[Collection(nameof(GlobalRandomState))]
[Trait("Category", "Slow")]
public class MpiJobTests
{
    [Fact]
    public void Every_collective_returns_what_each_rank_predicts()
    {
        var run = CliProcess.Run(TestModels.TempDir(), "launch", "-n", "2", "--check");
        Assert.True(run.ExitCode == 0, run.All);
        Assert.Contains("[rank 0] all collectives correct on rank 0 of 2", run.Stdout);
        Assert.Contains("[rank 1] all collectives correct on rank 1 of 2", run.Stdout);
        Assert.Contains("[rank 1] all-to-all", run.Stdout);
        Assert.Matches(@"\[rank 0\] all-reduce 16 MiB fp32: [0-9.]+ ms, algorithm bandwidth [0-9.]+ GB/s, bus bandwidth [0-9.]+ GB/s", run.Stdout);
    }

    [Fact]
    public void Data_parallel_on_two_ranks_matches_one_process_and_saves_the_same_model()
    {
        var (dir, configPath, config, home) = Setup(maxSteps: 10);
        var single = Path.Combine(dir, "single");
        Pretraining.Run(config, new PretrainOptions(single, Home: home)); // also fills the tokenizer and token caches

        var parallel = Path.Combine(dir, "dp2");
        var job = CliProcess.Run(home, "launch", "-n", "2", "--", "pretrain", "--config", configPath, "--out", parallel, "--parallel", "dp=2");
        Assert.True(job.ExitCode == 0, job.All);
        Assert.Contains("data-parallel    [0,1]", job.All); // the layout, printed once by rank 0
        Assert.Contains("[rank 1] ", job.All);

        var expected = Metrics(single);
        var actual = Metrics(parallel);
        Assert.Equal(expected.Select(m => m.Step), actual.Select(m => m.Step)); // rank 0 alone wrote metrics: no duplicates
        for (int i = 0; i < expected.Count; i++)
        {
            Assert.Equal(expected[i].TrainLoss, actual[i].TrainLoss, 1e-5);
            if (expected[i].ValLoss is { } v) Assert.Equal(v, actual[i].ValLoss!.Value, 1e-5);
        }
        AssertSameWeights(Path.Combine(single, ModelFolder.WeightsFile), Path.Combine(parallel, ModelFolder.WeightsFile));
        Assert.Equal(TrainingCheckpoint.List(single).Select(c => c.Step), TrainingCheckpoint.List(parallel).Select(c => c.Step));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void Zero_halves_optimizer_state_matches_one_process_and_resumes_on_another_layout(int stage)
    {
        var (dir, configPath, config, home) = Setup(maxSteps: 10);
        var single = Path.Combine(dir, "single");
        Pretraining.Run(config, new PretrainOptions(single, Home: home));

        var zero = Path.Combine(dir, $"zero{stage}");
        var job = CliProcess.Run(home, "launch", "-n", "2", "--", "pretrain", "--config", configPath, "--out", zero, "--parallel", $"dp=2,zero={stage}");
        Assert.True(job.ExitCode == 0, job.All);
        var memory = Regex.Match(job.All, @"\[rank 1\] ZeRO-(\d): optimizer state ([\d.]+) MB on rank 1 \(AdamW on one process: ([\d.]+) MB");
        Assert.True(memory.Success, job.All);
        Assert.Equal(stage.ToString(), memory.Groups[1].Value);
        Assert.Equal(double.Parse(memory.Groups[3].Value, CultureInfo.InvariantCulture) / 2, double.Parse(memory.Groups[2].Value, CultureInfo.InvariantCulture), 0.002);
        AssertSameLosses(Metrics(single), Metrics(zero));
        AssertSameWeights(Path.Combine(single, ModelFolder.WeightsFile), Path.Combine(zero, ModelFolder.WeightsFile));

        // The sharded optimizer state was gathered into an ordinary checkpoint: one process resumes it from step 5.
        Directory.Delete(Path.Combine(zero, "checkpoint-10"), recursive: true);
        Pretraining.Run(config, new PretrainOptions(zero, Resume: true, Home: home));
        AssertSameLosses(Metrics(single), Metrics(zero));
        if (stage != 2) return;
        // And the other way: two ZeRO-2 ranks resume the single process's checkpoint.
        Directory.Delete(Path.Combine(single, "checkpoint-10"), recursive: true);
        var expected = Metrics(zero);
        var resumed = CliProcess.Run(home, "launch", "-n", "2", "--", "pretrain", "--config", configPath, "--out", single, "--resume", "--parallel", "dp=2,zero=2");
        Assert.True(resumed.ExitCode == 0, resumed.All);
        AssertSameLosses(expected, Metrics(single));
    }

    [Fact]
    public async Task A_killed_rank_ends_the_job_naming_it_and_the_last_checkpoint_resumes()
    {
        var (dir, configPath, config, home) = Setup(maxSteps: 100_000);
        var run = Path.Combine(dir, "run");
        using var launcher = CliProcess.Start(home, "launch", "-n", "2", "--", "pretrain", "--config", configPath, "--out", run, "--parallel", "dp=2");
        try
        {
            var output = new StringBuilder();
            var reader = Task.Run(() => { while (launcher.StandardOutput.ReadLine() is { } line) lock (output) output.AppendLine(line); });
            var errors = launcher.StandardError.ReadToEndAsync();
            WaitFor(() => TrainingCheckpoint.List(run).Count > 0, TimeSpan.FromMinutes(2), "a first checkpoint");
            Kill(RankProcess(home, rank: 1));
            Assert.True(launcher.WaitForExit(TimeSpan.FromMinutes(1)), "the launcher still runs a minute after rank 1 was killed");
            await reader;
            var all = output + await errors;
            Assert.NotEqual(0, launcher.ExitCode);
            Assert.Contains("error: the job failed: rank 1", all);
        }
        finally
        {
            CliProcess.Stop(launcher);
        }
        // The newest complete checkpoint is intact; one process continues from it (the layout may change on resume).
        var last = TrainingCheckpoint.List(run).Last().Step;
        var resumed = Pretraining.Run(config with { Training = config.Training with { MaxSteps = (int)last + 2 } }, new PretrainOptions(run, Resume: true, Home: home));
        Assert.Equal(last + 2, resumed.Steps);
    }

    [Fact]
    public async Task An_interrupt_seen_by_one_rank_stops_every_rank_after_the_same_step_with_a_checkpoint()
    {
        var (dir, configPath, _, home) = Setup(maxSteps: 100_000);
        var run = Path.Combine(dir, "run");
        using var launcher = CliProcess.Start(home, "launch", "-n", "2", "--", "pretrain", "--config", configPath, "--out", run, "--parallel", "dp=2");
        try
        {
            var stdout = launcher.StandardOutput.ReadToEndAsync();
            var stderr = launcher.StandardError.ReadToEndAsync();
            WaitFor(() => TrainingCheckpoint.List(run).Count > 0, TimeSpan.FromMinutes(2), "a first checkpoint");
            const int SIGINT = 2;
            Assert.Equal(0, kill(RankProcess(home, rank: 1), SIGINT)); // only rank 1 sees Ctrl-C
            Assert.True(launcher.WaitForExit(TimeSpan.FromMinutes(1)), "the job still runs a minute after rank 1 was interrupted");
            var all = await stdout + await stderr;
            Assert.Equal(130, launcher.ExitCode);
            var stops = Regex.Matches(all, @"\[rank (\d)\] stopped at step (\d+)").ToDictionary(m => m.Groups[1].Value, m => long.Parse(m.Groups[2].Value));
            Assert.True(stops.Count == 2, all);
            Assert.Equal(stops["0"], stops["1"]);
            Assert.Contains(TrainingCheckpoint.List(run), c => c.Step == stops["0"]);
        }
        finally
        {
            CliProcess.Stop(launcher);
        }
    }

    [Fact]
    public async Task A_hung_rank_makes_the_waiting_rank_end_the_job_after_the_timeout()
    {
        var (dir, configPath, _, home) = Setup(maxSteps: 100_000);
        var run = Path.Combine(dir, "run");
        using var launcher = CliProcess.Start(home, "launch", "-n", "2", "--", "pretrain", "--config", configPath, "--out", run, "--parallel", "dp=2,timeout_s=4");
        try
        {
            var stdout = launcher.StandardOutput.ReadToEndAsync();
            var stderr = launcher.StandardError.ReadToEndAsync();
            WaitFor(() => TrainingCheckpoint.List(run).Count > 0, TimeSpan.FromMinutes(2), "a first checkpoint");
            const int SIGSTOP = 19; // Linux
            Assert.Equal(0, kill(RankProcess(home, rank: 1), SIGSTOP));
            Assert.True(launcher.WaitForExit(TimeSpan.FromMinutes(1)), "the launcher still runs a minute after rank 1 stopped");
            var all = await stdout + await stderr;
            Assert.NotEqual(0, launcher.ExitCode);
            Assert.Contains("rank 0: all-reduce on the data-parallel group did not finish within 4 s", all);
        }
        finally
        {
            CliProcess.Stop(launcher);
        }
    }

    private static (string Dir, string ConfigPath, PretrainConfig Config, string Home) Setup(int maxSteps)
    {
        var dir = TestModels.TempDir();
        var json = TrainingTests.TinyConfig(TrainingTests.WriteCorpus(dir), maxSteps);
        json["training"]!["threads"] = 1; // two ranks on a 2-core machine
        json["training"]!["checkpoint_interval"] = 5;
        var configPath = Path.Combine(dir, "tiny.json");
        File.WriteAllText(configPath, json.ToJsonString());
        return (dir, configPath, PretrainConfig.Parse(json, configPath), Path.Combine(dir, "home"));
    }

    private static void AssertSameWeights(string expectedPath, string actualPath) => SameTraining.AssertSameWeights(expectedPath, actualPath, 1e-5);

    private static void WaitFor(Func<bool> condition, TimeSpan limit, string what)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            if (clock.Elapsed > limit) throw new TimeoutException($"no {what} after {limit.TotalSeconds} s");
            Thread.Sleep(100);
        }
    }

    /// <summary>The process of world rank <paramref name="rank"/> of the job whose TIANGONG_HOME is <paramref name="home"/>, found through /proc.</summary>
    private static int RankProcess(string home, int rank)
    {
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid)) continue;
            string environ;
            try { environ = File.ReadAllText(Path.Combine(dir, "environ")); }
            catch (IOException) { continue; }
            catch (UnauthorizedAccessException) { continue; }
            var vars = environ.Split('\0');
            if (vars.Contains($"TIANGONG_HOME={home}") && vars.Contains($"OMPI_COMM_WORLD_RANK={rank}")) return pid;
        }
        throw new InvalidOperationException($"no process of rank {rank} with TIANGONG_HOME={home}");
    }

    private static void Kill(int pid) => Assert.Equal(0, kill(pid, 9));

    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int sig);
}
