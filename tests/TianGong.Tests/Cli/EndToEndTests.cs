using System.Text.Json.Nodes;
using TianGong.Tests.Training;

namespace TianGong.Tests.Cli;

/// <summary>The README's flow through the real CLI: tokenizer, data, pretrain, generate, score, and the errors a user meets.</summary>
[Trait("Category", "Slow")]
public class EndToEndTests
{
    [Fact]
    public void Pretrain_then_generate_an_acrostic_and_score_from_the_command_line()
    {
        var dir = TestModels.TempDir();
        var home = Path.Combine(dir, "home");
        var configPath = Path.Combine(dir, "tiny.json");
        var config = TrainingTests.TinyConfig(TrainingTests.WriteCorpus(dir), maxSteps: 30);
        File.WriteAllText(configPath, config.ToJsonString());
        var run = Path.Combine(dir, "run");

        var pretrain = CliProcess.Run(home, "pretrain", "--config", configPath, "--out", run);
        Assert.True(pretrain.ExitCode == 0, pretrain.All);
        Assert.Contains("step 30/30", pretrain.Stdout);
        Assert.Contains("loss.png", pretrain.Stdout);

        var poem = CliProcess.Run(home, "generate", "--model", run, "--prompt", "題1", "--acrostic", "春風", "--seed", "3");
        Assert.True(poem.ExitCode == 0, poem.All);
        var lines = poem.Stdout.Split('\n');
        Assert.Equal("題1", lines[0]);
        Assert.StartsWith("春", lines[1]);
        Assert.StartsWith("風", lines[2]);

        var score = CliProcess.Run(home, "score", "--model", run, "--text", "春風花月，山水江河。", "--json", "--device", "cpu");
        Assert.True(score.ExitCode == 0, score.All);
        var json = JsonNode.Parse(score.Stdout)!;
        var ids = json["ids"]!.AsArray();
        var logprobs = json["logprobs"]!.AsArray().Select(l => l!.GetValue<double>()).ToList();
        Assert.Equal(ids.Count - 1, logprobs.Count);
        Assert.All(logprobs, l => Assert.True(l <= 0));
        Assert.Equal(Math.Exp(-logprobs.Average()), json["perplexity"]!.GetValue<double>(), 4);

        var byIds = CliProcess.Run(home, "score", "--model", run, "--ids", string.Join(",", ids), "--json");
        Assert.Equal(score.Stdout, byIds.Stdout);

        var further = CliProcess.Run(home, "pretrain", "--config", configPath, "--out", Path.Combine(dir, "further"), "--init-from", run, "--max-steps", "1", "--device", "cpu");
        Assert.True(further.ExitCode == 0, further.All);
        Assert.Contains($"from {run}", further.Stdout);
    }

    [Fact]
    public void Ctrl_c_finishes_the_step_writes_a_checkpoint_and_resume_continues_from_it()
    {
        var dir = TestModels.TempDir();
        var home = Path.Combine(dir, "home");
        var configPath = Path.Combine(dir, "long.json");
        var config = TrainingTests.TinyConfig(TrainingTests.WriteCorpus(dir), maxSteps: 100_000);
        config["training"]!["checkpoint_interval"] = 100_000;
        File.WriteAllText(configPath, config.ToJsonString());
        var run = Path.Combine(dir, "run");
        string[] args = ["pretrain", "--config", configPath, "--out", run];

        using var process = CliProcess.Start(home, args);
        CliProcess.Result result;
        try
        {
            var metrics = Path.Combine(run, "metrics.jsonl");
            var deadline = DateTime.UtcNow.AddMinutes(2);
            while (!(File.Exists(metrics) && File.ReadAllLines(metrics).Length >= 5) && DateTime.UtcNow < deadline && !process.HasExited) Thread.Sleep(200);
            Assert.False(process.HasExited, "pretrain ended before it was interrupted");
            CliProcess.Interrupt(process);
            result = CliProcess.Wait(process, args);
        }
        finally
        {
            CliProcess.Stop(process); // a failed assertion above must not leave a 100,000-step run behind
        }

        Assert.True(result.ExitCode == 130, result.All);
        Assert.Contains("interrupted", result.Stderr);
        var checkpoint = Assert.Single(Directory.GetDirectories(run, "checkpoint-*"));
        long step = long.Parse(Path.GetFileName(checkpoint)["checkpoint-".Length..]);
        Assert.True(step >= 5 && step < 100_000, $"checkpoint at step {step}");
        Assert.True(File.Exists(Path.Combine(run, "model.safetensors")));

        var resumed = CliProcess.Run(home, "pretrain", "--config", configPath, "--out", run, "--resume", "--max-steps", (step + 3).ToString());
        Assert.True(resumed.ExitCode == 0, resumed.All);
        Assert.Contains($"step {step + 3}/{step + 3}", resumed.Stdout);
    }

    [Fact]
    public void Tokenizer_train_and_data_prepare_write_their_files()
    {
        var dir = TestModels.TempDir();
        var corpus = TrainingTests.WriteCorpus(dir);
        var tokenizerPath = Path.Combine(dir, "tokenizer.json");
        var train = CliProcess.Run(dir, "tokenizer", "train", "--input", corpus, "--vocab-size", "320", "--out", tokenizerPath);
        Assert.True(train.ExitCode == 0, train.All);
        // Like Hugging Face's trainer, model.vocab holds every id, the special tokens' included.
        Assert.Equal(320, JsonNode.Parse(File.ReadAllText(tokenizerPath))!["model"]!["vocab"]!.AsObject().Count);

        var data = Path.Combine(dir, "tokens");
        var prepare = CliProcess.Run(dir, "data", "prepare", "--corpus", corpus, "--tokenizer", tokenizerPath, "--out", data);
        Assert.True(prepare.ExitCode == 0, prepare.All);
        Assert.True(File.Exists(Path.Combine(data, "index.json")));
    }

    [Fact]
    public void Bad_input_gets_one_clear_error_line_and_exit_code_1()
    {
        var dir = TestModels.TempDir();
        var badConfig = TrainingTests.TinyConfig("x.txt");
        badConfig["training"]!["learning_rate"] = -1;
        var configPath = Path.Combine(dir, "bad.json");
        File.WriteAllText(configPath, badConfig.ToJsonString());
        var r = CliProcess.Run(dir, "pretrain", "--config", configPath, "--out", Path.Combine(dir, "run"));
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("training.learning_rate", r.All);
        Assert.DoesNotContain("   at ", r.All);

        var missingPoetry = CliProcess.Run(Path.Combine(dir, "empty-home"), "pretrain", "--config", "poetry-tiny", "--out", Path.Combine(dir, "run2"));
        Assert.Equal(1, missingPoetry.ExitCode);
        Assert.Contains("chinese-poetry", missingPoetry.All);

        var modelDir = Path.Combine(dir, "broken-model");
        Directory.CreateDirectory(modelDir);
        File.Copy(TestModels.FixturePath("hf", "gpt2", "config.json"), Path.Combine(modelDir, "config.json"));
        var bytes = File.ReadAllBytes(TestModels.FixturePath("hf", "gpt2", "model.safetensors"));
        File.WriteAllBytes(Path.Combine(modelDir, "model.safetensors"), bytes[..(bytes.Length / 2)]);
        var truncated = CliProcess.Run(dir, "score", "--model", modelDir, "--ids", "1,2,3");
        Assert.Equal(1, truncated.ExitCode);
        Assert.Contains("model.safetensors", truncated.All);

        var gpu = CliProcess.Run(dir, "score", "--model", modelDir, "--ids", "1,2,3", "--device", "gpu");
        Assert.Equal(1, gpu.ExitCode);
        Assert.Contains("--device: 'gpu' is not a device (expected cpu, cuda or cuda:N)", gpu.Stderr);
        // The tests run on TorchSharp's CPU build, where CUDA is never available.
        var cuda = CliProcess.Run(dir, "pretrain", "--config", configPath, "--out", Path.Combine(dir, "run3"), "--device", "cuda:1");
        Assert.Equal(1, cuda.ExitCode);
        Assert.Contains("--device cuda:1: CUDA is not available", cuda.Stderr);
        Assert.DoesNotContain("   at ", cuda.All);
    }
}
