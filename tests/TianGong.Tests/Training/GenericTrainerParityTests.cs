using System.Text.Json.Nodes;
using TianGong.Training;

namespace TianGong.Tests.Training;

/// <summary>
/// The generic trainer must not change pretraining's numbers: these losses were recorded from the pretraining loop as it
/// was before <see cref="Trainer{TBatch}"/> (commit 7006b63, same configs and seeds, 2 threads), and are reproduced to
/// the last float bit on the machine that recorded them. The GPT-2 run adds dropout and gradient accumulation, so the
/// per-step reseeding and the loss scaling are covered too.
/// </summary>
[Collection(nameof(GlobalRandomState))]
public class GenericTrainerParityTests
{
    private static readonly (long Step, double Train, double? Val)[] Llama =
    [
        (1, 5.689482688903809, null),
        (2, 5.5141448974609375, null),
        (3, 5.054736137390137, null),
        (4, 4.68394660949707, null),
        (5, 4.314321517944336, 4.009335994720459),
        (6, 3.9970805644989014, null),
        (7, 3.763073682785034, null),
        (8, 3.519279718399048, null),
        (9, 3.4578592777252197, null),
        (10, 3.3287065029144287, 3.3165897130966187),
        (11, 3.348461866378784, null),
        (12, 3.32489275932312, null),
        (13, 3.2330384254455566, null),
        (14, 3.193922519683838, null),
        (15, 3.265981912612915, 3.257776379585266),
        (16, 3.2077291011810303, null),
        (17, 3.2277028560638428, null),
        (18, 3.241870880126953, null),
        (19, 3.2186288833618164, null),
        (20, 3.2373738288879395, 3.2530741691589355),
    ];

    private static readonly (long Step, double Train, double? Val)[] Gpt2WithDropoutAndAccumulation =
    [
        (1, 5.699263334274292, null),
        (2, 5.424186706542969, null),
        (3, 5.032747745513916, null),
        (4, 4.5991363525390625, null),
        (5, 4.258214473724365, 4.070825576782227),
        (6, 4.083834171295166, 3.9924033880233765),
    ];

    internal static JsonObject Gpt2Config(string corpus)
    {
        var config = TrainingTests.TinyConfig(corpus, maxSteps: 6);
        config["model"] = new JsonObject
        {
            ["model_type"] = "gpt2", ["n_embd"] = 32, ["n_layer"] = 2, ["n_head"] = 4, ["n_positions"] = 64,
            ["resid_pdrop"] = 0.1, ["embd_pdrop"] = 0.1, ["attn_pdrop"] = 0.1,
        };
        config["training"]!["grad_accum"] = 2;
        return config;
    }

    [Fact]
    public void Pretraining_through_the_generic_trainer_reproduces_the_recorded_losses()
    {
        var dir = TestModels.TempDir();
        var corpus = TrainingTests.WriteCorpus(dir);
        var home = Path.Combine(dir, "home");
        foreach (var (name, json, expected) in new[] { ("llama", TrainingTests.TinyConfig(corpus), Llama), ("gpt2", Gpt2Config(corpus), Gpt2WithDropoutAndAccumulation) })
        {
            var run = Path.Combine(dir, name);
            Pretraining.Run(PretrainConfig.Parse(json, "t.json"), new PretrainOptions(run, Home: home));
            var actual = MetricsLog.Read(Path.Combine(run, Pretraining.MetricsFile));
            Assert.Equal(expected.Select(e => e.Step), actual.Select(a => a.Step));
            for (int i = 0; i < expected.Length; i++)
            {
                // 1e-6 leaves room for another CPU's float rounding; on the recording machine the difference is 0.
                Assert.Equal(expected[i].Train, actual[i].TrainLoss, 1e-6);
                Assert.Equal(expected[i].Val is null, actual[i].ValLoss is null);
                if (expected[i].Val is { } v) Assert.Equal(v, actual[i].ValLoss!.Value, 1e-6);
            }
        }
    }
}
