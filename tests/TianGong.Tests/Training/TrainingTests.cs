using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Training;

namespace TianGong.Tests.Training;

/// <summary>
/// Tests that seed torch's global generator and compare runs: other tests drawing from it in parallel would
/// change the weights between seeding and use, so this collection runs on its own.
/// </summary>
[CollectionDefinition(nameof(GlobalRandomState), DisableParallelization = true)]
public sealed class GlobalRandomState;

[Collection(nameof(GlobalRandomState))]
public class TrainingTests
{
    /// <summary>A corpus of made-up "poems" with enough structure that a tiny model's loss falls within a few dozen steps.</summary>
    internal static string WriteCorpus(string dir)
    {
        var chars = "春夏秋冬風花雪月山水江河日雲天地人心";
        var rng = new Random(3);
        var docs = Enumerable.Range(0, 400).Select(i =>
        {
            var lines = Enumerable.Range(0, 4).Select(_ => new string(Enumerable.Range(0, 5).Select(_ => chars[rng.Next(chars.Length)]).ToArray()) + "，" +
                                                           new string(Enumerable.Range(0, 5).Select(_ => chars[rng.Next(chars.Length)]).ToArray()) + "。");
            return $"題{i % 7}\n" + string.Join("\n", lines);
        });
        var path = Path.Combine(dir, "poems.txt");
        File.WriteAllText(path, string.Join("\n\n", docs));
        return path;
    }

    internal static JsonObject TinyConfig(string corpus, int maxSteps = 20) => new()
    {
        ["model"] = new JsonObject
        {
            ["model_type"] = "llama", ["hidden_size"] = 32, ["intermediate_size"] = 64, ["num_hidden_layers"] = 2,
            ["num_attention_heads"] = 4, ["num_key_value_heads"] = 2, ["max_position_embeddings"] = 64, ["tie_word_embeddings"] = true,
        },
        ["tokenizer"] = new JsonObject { ["vocab_size"] = 300 },
        ["data"] = new JsonObject { ["corpus"] = corpus, ["val_fraction"] = 0.05 },
        ["training"] = new JsonObject
        {
            ["seq_len"] = 32, ["batch_size"] = 4, ["max_steps"] = maxSteps, ["learning_rate"] = 1e-2, ["min_learning_rate"] = 1e-3,
            ["warmup_steps"] = 2, ["eval_interval"] = 5, ["eval_batches"] = 2, ["log_interval"] = 1, ["checkpoint_interval"] = 7,
            ["threads"] = 2,
        },
    };

    private static List<MetricsRecord> Metrics(string runDir) => MetricsLog.Read(Path.Combine(runDir, Pretraining.MetricsFile)).ToList();

    [Fact]
    public void Resuming_after_an_interruption_reproduces_the_uninterrupted_losses()
    {
        var dir = TestModels.TempDir();
        var config = PretrainConfig.Parse(TinyConfig(WriteCorpus(dir)), "test.json");
        var home = Path.Combine(dir, "home");

        var straight = Path.Combine(dir, "straight");
        Pretraining.Run(config, new PretrainOptions(straight, Home: home));

        // Interrupt after step 10 as Ctrl-C would: the step finishes, a checkpoint is written, the run returns.
        var interrupted = Path.Combine(dir, "interrupted");
        using var cts = new CancellationTokenSource();
        var partial = Pretraining.Run(config, new PretrainOptions(interrupted, Home: home),
            new PretrainCallbacks(Progress: p => { if (p.Step == 10) cts.Cancel(); }), cts.Token);
        Assert.Equal(10, partial.Steps);
        Assert.Contains(TrainingCheckpoint.List(interrupted), c => c.Step == 10);
        var resumed = Pretraining.Run(config, new PretrainOptions(interrupted, Resume: true, Home: home));
        Assert.Equal(20, resumed.Steps);

        var expected = Metrics(straight);
        var actual = Metrics(interrupted);
        Assert.Equal(expected.Select(m => m.Step), actual.Select(m => m.Step));
        for (int i = 0; i < expected.Count; i++)
        {
            Assert.Equal(expected[i].TrainLoss, actual[i].TrainLoss, 1e-6);
            if (expected[i].ValLoss is { } v) Assert.Equal(v, actual[i].ValLoss!.Value, 1e-6);
        }
    }

    [Fact]
    public void A_short_run_lowers_the_loss_and_leaves_a_complete_model_folder()
    {
        var dir = TestModels.TempDir();
        var config = PretrainConfig.Parse(TinyConfig(WriteCorpus(dir), maxSteps: 40), "test.json");
        var run = Path.Combine(dir, "run");
        var result = Pretraining.Run(config, new PretrainOptions(run, Home: Path.Combine(dir, "home")));

        foreach (var f in new[] { "config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "metrics.jsonl", "loss.png" })
            Assert.True(File.Exists(Path.Combine(run, f)), $"{f} is missing");
        var metrics = Metrics(run);
        var vals = metrics.Where(m => m.ValLoss is not null).Select(m => m.ValLoss!.Value).ToList();
        Assert.True(vals[^1] < vals[0] - 0.5, $"validation loss should fall clearly: {string.Join(", ", vals)}");
        Assert.Equal(vals[^1], result.FinalValLoss!.Value, 1e-9);
        // Only the newest checkpoints are kept (keep_checkpoints = 2), and the last one is at max_steps.
        Assert.Equal(new long[] { 35, 40 }, TrainingCheckpoint.List(run).Select(c => c.Step));
        using var loaded = ModelFolder.Load(run);
        Assert.Equal(config.Model.ModelType, loaded.Config.ModelType);
    }

    [Fact]
    public void Starting_over_an_existing_run_without_resume_is_refused_and_resume_without_a_run_too()
    {
        var dir = TestModels.TempDir();
        var config = PretrainConfig.Parse(TinyConfig(WriteCorpus(dir), maxSteps: 3), "test.json");
        var run = Path.Combine(dir, "run");
        var home = Path.Combine(dir, "home");
        var e1 = Assert.Throws<TianGongException>(() => Pretraining.Run(config, new PretrainOptions(run, Resume: true, Home: home)));
        Assert.Contains("nothing to resume", e1.Message);
        Pretraining.Run(config, new PretrainOptions(run, Home: home));
        var e2 = Assert.Throws<TianGongException>(() => Pretraining.Run(config, new PretrainOptions(run, Home: home)));
        Assert.Contains("--resume", e2.Message);
    }

    [Fact]
    public void Our_AdamW_matches_torch_AdamW()
    {
        manual_seed(0);
        var w1 = new TorchSharp.Modules.Parameter(randn(8, 5));
        var w2 = new TorchSharp.Modules.Parameter(w1.detach().clone());
        using var ours = new AdamW([("w", w1)], new AdamWOptions(0.9, 0.95, 1e-8, 0.1), new HashSet<string>());
        var reference = torch.optim.AdamW([w2], lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1);
        for (int step = 0; step < 10; step++)
        {
            var target = randn(8, 5);
            (w1 - target).pow(2).sum().backward();
            (w2 - target).pow(2).sum().backward();
            ours.Step(1e-2);
            reference.step();
            ours.ZeroGrad();
            reference.zero_grad();
        }
        double diff = (w1 - w2).abs().max().item<float>();
        Assert.True(diff < 1e-6, $"max difference {diff}");
    }

    [Fact]
    public void Learning_rate_warms_up_linearly_then_decays_by_cosine_to_the_minimum()
    {
        var s = new LearningRateSchedule(Peak: 1.0, Min: 0.1, WarmupSteps: 10, TotalSteps: 110);
        Assert.Equal(0.1, s.At(0), 9);
        Assert.Equal(1.0, s.At(9), 9);
        Assert.Equal(1.0, s.At(10), 9);
        Assert.Equal(0.55, s.At(60), 9);
        Assert.Equal(0.1, s.At(110), 9);
        Assert.True(s.At(30) > s.At(31));
    }

    [Fact]
    public void Weight_decay_skips_norms_biases_and_embeddings()
    {
        using var model = TestModels.Create("gpt2");
        var noDecay = Trainer.NoDecayNames(model);
        Assert.Contains("transformer.wte.weight", noDecay);
        Assert.Contains("transformer.wpe.weight", noDecay);
        Assert.Contains("transformer.h.0.ln_1.weight", noDecay);
        Assert.Contains("transformer.h.0.attn.c_attn.bias", noDecay);
        Assert.DoesNotContain("transformer.h.0.attn.c_attn.weight", noDecay);
        Assert.DoesNotContain("transformer.h.1.mlp.c_fc.weight", noDecay);
    }

    [Fact]
    public void Bfloat16_training_keeps_fp32_master_weights_and_still_learns()
    {
        using var model = TestModels.Create("llama");
        model.to(ScalarType.BFloat16);
        using var optimizer = new AdamW(model.named_parameters(), new AdamWOptions(WeightDecay: 0), Trainer.NoDecayNames(model));
        Assert.Contains(optimizer.StateDict().Keys, k => k.EndsWith(".master"));
        Assert.All(optimizer.StateDict().Values, t => Assert.Equal(ScalarType.Float32, t.dtype));
        var batch = randint(0, 64, [2, 9], dtype: ScalarType.Int64);
        double first = 0, last = 0;
        for (int i = 0; i < 40; i++)
        {
            using var scope = NewDisposeScope();
            var loss = LanguageModeling.Loss(model.forward(batch[.., ..8]), batch[.., 1..]);
            loss.backward();
            optimizer.Step(1e-2);
            optimizer.ZeroGrad();
            if (i == 0) first = loss.item<float>();
            last = loss.item<float>();
        }
        Assert.Equal(ScalarType.BFloat16, model.parameters().First().dtype);
        Assert.True(last < first / 2, $"loss {first} → {last}");
    }
}
