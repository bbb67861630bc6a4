using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Tests.Cli;
using TianGong.Tests.Training;
using TianGong.Training;

using static TianGong.Tests.Parallel.SameTraining;

namespace TianGong.Tests.Parallel;

/// <summary>
/// Two pipeline stages under mpirun (<c>tiangong launch -n 2 -- pretrain ... --parallel pp=2,...</c>) against one process
/// on the same global batches: same losses, the same saved model, and a checkpoint that one process resumes.
/// </summary>
[Collection(nameof(GlobalRandomState))]
[Trait("Category", "Slow")]
public class PipelineJobTests
{
    [Theory]
    [InlineData("llama", "1f1b")]
    [InlineData("gpt2", "1f1b")]
    [InlineData("gpt2", "gpipe")]
    public void Two_stages_match_one_process_save_the_same_model_and_resume_on_one_process(string family, string schedule)
    {
        var (dir, configPath, config, home) = Setup(family);
        var single = Path.Combine(dir, "single");
        Pretraining.Run(config, new PretrainOptions(single, Home: home));

        var pipeline = Path.Combine(dir, "pp2");
        var job = CliProcess.Run(home, "launch", "-n", "2", "--", "pretrain", "--config", configPath, "--out", pipeline,
            "--parallel", $"pp=2,micro_batches=4,schedule={schedule}");
        Assert.True(job.ExitCode == 0, job.All);
        Assert.Matches(@"pipeline\s+\[0,1\]", job.All); // the groups, printed once by rank 0
        Assert.Contains("+norm/head", job.All);           // and which layers each stage runs
        AssertSameLosses(Metrics(single), Metrics(pipeline));
        AssertSameWeights(Path.Combine(single, ModelFolder.WeightsFile), Path.Combine(pipeline, ModelFolder.WeightsFile));
        if (schedule == "gpipe") return;

        // Both stages' weights and optimizer state are in the checkpoint: one process resumes it at step 5.
        Directory.Delete(Path.Combine(pipeline, "checkpoint-10"), recursive: true);
        Pretraining.Run(config, new PretrainOptions(pipeline, Resume: true, Home: home));
        AssertSameLosses(Metrics(single), Metrics(pipeline));
        AssertSameWeights(Path.Combine(single, ModelFolder.WeightsFile), Path.Combine(pipeline, ModelFolder.WeightsFile));
    }

    [Fact]
    public void One_process_checkpoint_resumes_on_two_stages()
    {
        var (dir, configPath, config, home) = Setup("gpt2");
        var single = Path.Combine(dir, "single");
        Pretraining.Run(config, new PretrainOptions(single, Home: home));
        var expected = Metrics(single);
        Directory.Delete(Path.Combine(single, "checkpoint-10"), recursive: true);
        var job = CliProcess.Run(home, "launch", "-n", "2", "--", "pretrain", "--config", configPath, "--out", single, "--resume",
            "--parallel", "pp=2,micro_batches=2");
        Assert.True(job.ExitCode == 0, job.All);
        AssertSameLosses(expected, Metrics(single));
    }

    /// <summary>
    /// Four ranks (mpirun oversubscribes the two cores): two data-parallel replicas of a two-stage pipeline, the gradients
    /// all-reduced inside each stage's data-parallel group, optionally with ZeRO sharding each stage's optimizer state; or
    /// a two-stage pipeline of tensor-parallel pairs (vocabulary-parallel embedding on the first stage, gathered logits on
    /// the last). Each rank holds only its stage's parameters (of its shards); the checkpoint is still the whole model,
    /// which one process resumes.
    /// </summary>
    [Theory]
    [InlineData("llama", "dp=2,pp=2,micro_batches=2", "data-parallel")]
    [InlineData("gpt2", "dp=2,pp=2,micro_batches=2,zero=1", "data-parallel")]
    [InlineData("llama", "dp=2,pp=2,micro_batches=2,zero=2,schedule=gpipe", "data-parallel")]
    [InlineData("gpt2", "tp=2,pp=2,micro_batches=4", "tensor-parallel")]
    [InlineData("llama", "tp=2,pp=2,micro_batches=2", "tensor-parallel")]
    public void Four_ranks_of_pipelines_with_data_or_tensor_parallelism_match_one_process_and_hold_one_stage_each(string family, string layout, string pairs)
    {
        var (dir, configPath, config, home) = Setup(family);
        double tolerance = pairs == "tensor-parallel" ? 1e-4 : 5e-5;
        var single = Path.Combine(dir, "single");
        Pretraining.Run(config, new PretrainOptions(single, Home: home));

        var run = Path.Combine(dir, "dp2pp2");
        var job = CliProcess.Run(home, "launch", "-n", "4", "--", "pretrain", "--config", configPath, "--out", run, "--parallel", layout);
        Assert.True(job.ExitCode == 0, job.All);
        Assert.Matches(pairs + @"\s+\[0,1\] \[2,3\]", job.All); // each stage's replicas or shards: ranks 0,1 run stage 0, ranks 2,3 stage 1
        Assert.Matches(@"pipeline\s+\[0,2\] \[1,3\]", job.All);
        var memory = System.Text.RegularExpressions.Regex.Matches(job.All,
            @"rank (\d): parameters ([\d.]+) of ([\d.]+) MB in memory \(stage (\d) of 2\)");
        Assert.True(memory.Count == 4, job.All);
        foreach (System.Text.RegularExpressions.Match m in memory)
        {
            double held = double.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture);
            double whole = double.Parse(m.Groups[3].Value, System.Globalization.CultureInfo.InvariantCulture);
            Assert.True(held < whole * 0.8, m.Value);
            Assert.Equal(int.Parse(m.Groups[1].Value) / 2, int.Parse(m.Groups[4].Value)); // ranks 0, 1: stage 0; ranks 2, 3: stage 1
        }
        AssertSameLosses(Metrics(single), Metrics(run));
        AssertSameWeights(Path.Combine(single, ModelFolder.WeightsFile), Path.Combine(run, ModelFolder.WeightsFile), tolerance);

        // The checkpoint at step 5 is the whole model and optimizer: one process resumes it.
        var expected = Metrics(single);
        Directory.Delete(Path.Combine(run, "checkpoint-10"), recursive: true);
        Pretraining.Run(config, new PretrainOptions(run, Resume: true, Home: home));
        AssertSameLosses(expected, Metrics(run));
        AssertSameWeights(Path.Combine(single, ModelFolder.WeightsFile), Path.Combine(run, ModelFolder.WeightsFile), tolerance);

        // And the other way: the four ranks load the one-process checkpoint, each keeping its stage, and go on alike.
        Directory.Delete(Path.Combine(single, "checkpoint-10"), recursive: true);
        var resumed = CliProcess.Run(home, "launch", "-n", "4", "--", "pretrain", "--config", configPath, "--out", single, "--resume", "--parallel", layout);
        Assert.True(resumed.ExitCode == 0, resumed.All);
        AssertSameLosses(expected, Metrics(single));
        AssertSameWeights(Path.Combine(run, ModelFolder.WeightsFile), Path.Combine(single, ModelFolder.WeightsFile), tolerance);
    }

    /// <summary>
    /// Interleaved stages: 4 layers in 4 virtual stages on 2 ranks (rank 0 runs layers 0 and 2 with the embeddings, rank 1
    /// layers 1 and 3 with the head), by interleaved 1F1B or breadth-first; the same losses and model as one process, and
    /// one process resumes it.
    /// </summary>
    [Theory]
    [InlineData("1f1b")]
    [InlineData("gpipe")]
    public void Two_chunks_per_rank_interleaved_match_one_process_and_resume_on_one_process(string schedule)
    {
        var (dir, configPath, config, home) = Setup("gpt2", layers: 4);
        var single = Path.Combine(dir, "single");
        Pretraining.Run(config, new PretrainOptions(single, Home: home));

        var run = Path.Combine(dir, "interleaved");
        var job = CliProcess.Run(home, "launch", "-n", "2", "--", "pretrain", "--config", configPath, "--out", run,
            "--parallel", $"pp=2,virtual_stages=2,schedule={schedule},micro_batches=4");
        Assert.True(job.ExitCode == 0, job.All);
        Assert.Contains("stage 2 (rank 0): [2, 3)", job.All.Replace("\n[rank 0] ", " "));
        AssertSameLosses(Metrics(single), Metrics(run));
        AssertSameWeights(Path.Combine(single, ModelFolder.WeightsFile), Path.Combine(run, ModelFolder.WeightsFile));

        Directory.Delete(Path.Combine(run, "checkpoint-10"), recursive: true);
        Pretraining.Run(config, new PretrainOptions(run, Resume: true, Home: home));
        AssertSameLosses(Metrics(single), Metrics(run));
    }

    private static (string Dir, string ConfigPath, PretrainConfig Config, string Home) Setup(string family, int layers = 2)
    {
        var dir = TestModels.TempDir();
        var json = TrainingTests.TinyConfig(TrainingTests.WriteCorpus(dir), maxSteps: 10);
        json["model"]!["num_hidden_layers"] = layers;
        if (family == "gpt2")
            json["model"] = new JsonObject
            {
                ["model_type"] = "gpt2", ["n_embd"] = 32, ["n_layer"] = layers, ["n_head"] = 4, ["n_positions"] = 64,
                ["resid_pdrop"] = 0.0, ["embd_pdrop"] = 0.0, ["attn_pdrop"] = 0.0, // dropout masks are drawn per micro-batch
            };
        json["training"]!["threads"] = 1; // two ranks on a 2-core machine
        json["training"]!["checkpoint_interval"] = 5;
        var configPath = Path.Combine(dir, "tiny.json");
        File.WriteAllText(configPath, json.ToJsonString());
        return (dir, configPath, PretrainConfig.Parse(json, configPath), Path.Combine(dir, "home"));
    }

    /// <param name="tolerance">With tensor parallelism as well, 1e-4: the split sums round differently too (TensorParallelTests explains the bound).</param>
    /// <remarks>
    /// Micro-batch losses sum in another order than one batch's, a difference of float rounding (~1e-7) that AdamW's
    /// division by sqrt(v) turns into up to ~2e-5 on weights whose gradients are near zero after 10 steps.
    /// </remarks>
    private static void AssertSameWeights(string expectedPath, string actualPath, double tolerance = 5e-5) =>
        SameTraining.AssertSameWeights(expectedPath, actualPath, tolerance);
}
