using System.Text.Json.Nodes;
using TianGong.Parallelism;
using TianGong.Tests.Cli;
using TianGong.Tests.Training;
using TianGong.Training;

namespace TianGong.Tests.Parallel;

/// <summary><c>tiangong plan --apply CONFIG</c>: the chosen layout lands in the config's parallel section, which pretrain then reads.</summary>
public class PipelinePlanApplyTests
{
    [Fact]
    public void A_given_layout_is_written_into_the_parallel_section_and_read_back_by_pretrain()
    {
        var (dir, path, original) = Config();
        var run = CliProcess.Run(dir, "plan", "--apply", path, "--devices", "2", "--layout", "pp=2,micro_batch=1,recompute=selective");
        Assert.True(run.ExitCode == 0, run.All);
        Assert.Contains("wrote parallel dp=1,tp=1,pp=2", run.Stdout);

        var written = (JsonObject)JsonNode.Parse(File.ReadAllText(path))!;
        foreach (var section in new[] { "model", "tokenizer", "data", "training" })
            Assert.True(JsonNode.DeepEquals(original[section], written[section]), $"{section} changed");
        // Batch 4 on one data-parallel rank in micro-batches of 1 row: 4 micro-batches; bucket_mb kept from the old section.
        var parallel = PretrainConfig.Parse(written, path).Parallel;
        Assert.Equal(new ParallelConfig(Dp: 1, Tp: 1, Pp: 2, Recompute: "selective", BucketMb: 5, MicroBatches: 4), parallel with { PpSplit = null });
        Assert.Empty(Directory.GetFiles(dir, "*.tmp*"));
    }

    [Fact]
    public void A_search_applies_the_fastest_layout_this_build_runs_and_keeps_stdout_json()
    {
        var (dir, path, _) = Config();
        var run = CliProcess.Run(dir, "plan", "--apply", path, "--devices", "2", "--devices-per-node", "2", "--device-memory", "4",
            "--device-tflops", "0.3", "--intra-node-gbps", "5", "--json");
        Assert.True(run.ExitCode == 0, run.All);
        Assert.NotEmpty(JsonNode.Parse(run.Stdout)!.AsArray());
        Assert.Contains("wrote parallel", run.Stderr);
        var parallel = PretrainConfig.Parse(JsonNode.Parse(File.ReadAllText(path))!, path).Parallel;
        Assert.Equal(2, parallel.WorldSize);
        Assert.StartsWith($"wrote parallel {parallel} into", run.Stderr.Trim());
    }

    [Fact]
    public void A_layout_this_build_cannot_run_is_refused_and_the_config_is_left_alone()
    {
        var (dir, path, _) = Config();
        var before = File.ReadAllText(path);
        var run = CliProcess.Run(dir, "plan", "--apply", path, "--devices", "4", "--layout", "pp=2,tp=2,dp=1,micro_batch=1,recompute=full");
        Assert.NotEqual(0, run.ExitCode);
        Assert.Contains("recomputation is not combined with tensor parallelism", run.All);
        Assert.Equal(before, File.ReadAllText(path));
    }

    [Fact]
    public void A_layout_with_virtual_stages_is_written_as_interleaved_1f1b()
    {
        var (dir, path, json) = Config();
        json["model"]!["num_hidden_layers"] = 4; // one per virtual stage
        File.WriteAllText(path, json.ToJsonString());
        var run = CliProcess.Run(dir, "plan", "--apply", path, "--devices", "2", "--layout", "pp=2,dp=1,micro_batch=1,virtual_stages=2");
        Assert.True(run.ExitCode == 0, run.All);
        var parallel = PretrainConfig.Parse(JsonNode.Parse(File.ReadAllText(path))!, path).Parallel;
        Assert.Equal((2, 2, "1f1b", 4), (parallel.Pp, parallel.VirtualStages, parallel.Schedule, parallel.MicroBatches)); // 4 rows of 1
    }

    private static (string Dir, string Path, JsonObject Json) Config()
    {
        var dir = TestModels.TempDir();
        var json = TrainingTests.TinyConfig(TrainingTests.WriteCorpus(dir), maxSteps: 10);
        json["parallel"] = new JsonObject { ["bucket_mb"] = 5 };
        var path = System.IO.Path.Combine(dir, "tiny.json");
        File.WriteAllText(path, json.ToJsonString());
        return (dir, path, json);
    }
}
