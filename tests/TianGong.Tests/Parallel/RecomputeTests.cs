using TianGong.Models;
using TianGong.Models.Gpt2;
using TianGong.Models.Layers;
using TianGong.Parallelism.Pipeline;
using TianGong.Training;

namespace TianGong.Tests.Parallel;

/// <summary>Recomputation (selective: attention core; full: every decoder layer) changes memory, never numbers.</summary>
[Collection(nameof(Training.GlobalRandomState))]
public class RecomputeTests
{
    [Theory]
    [MemberData(nameof(TestModels.DecoderFamilies), MemberType = typeof(TestModels))]
    public void The_whole_model_as_one_stage_computes_the_models_own_logits(string family)
    {
        using var lm = TestModels.Create(family);
        using var stage = new PipelineStage(lm, 0, 1, (0, lm.Config.LayerCount));
        using var ids = randint(0, 64, [2, 12]);
        using var expected = lm.forward(ids);
        using var actual = stage.Forward(ids);
        Assert.Equal(0.0, (expected - actual).abs().max().item<float>());
        Assert.Equal(lm.parameters().Count(), stage.Parameters.Count); // every parameter belongs to some part
    }

    public static IEnumerable<object[]> FamiliesAndModes() =>
        from family in new[] { "gpt2-dropout", "llama", "mistral", "qwen2" }
        from mode in new[] { Recompute.Selective, Recompute.Full }
        select new object[] { family, mode };

    [Theory]
    [MemberData(nameof(FamiliesAndModes))]
    public void Recomputed_training_gives_the_same_loss_and_gradients_as_none(string family, Recompute mode)
    {
        var (lossNone, gradsNone) = LossAndGradients(family, Recompute.None);
        var (loss, grads) = LossAndGradients(family, mode);
        Assert.Equal(lossNone, loss);
        Assert.Equal(gradsNone.Keys, grads.Keys);
        foreach (var (name, g) in gradsNone)
            Assert.True(g.SequenceEqual(grads[name]), $"{mode}: gradient of {name} differs");
    }

    /// <summary>One forward and backward of a fixed batch in training mode; GPT-2 with dropout 0.1 everywhere, so the recomputation must replay the dropout masks.</summary>
    private static (float Loss, Dictionary<string, float[]> Grads) LossAndGradients(string family, Recompute mode)
    {
        manual_seed(7);
        using var lm = family == "gpt2-dropout"
            ? new Gpt2LMHeadModel(TestModels.Gpt2() with { ResidPdrop = 0.1, EmbdPdrop = 0.1, AttnPdrop = 0.1 })
            : TestModels.Create(family);
        if (family == "gpt2-dropout") lm.InitializeWeights();
        lm.train();
        using var stage = new PipelineStage(lm, 0, 1, (0, lm.Config.LayerCount), mode);
        using var ids = randint(0, 64, [3, 16]);
        using var target = randint(0, 64, [3, 16]);
        manual_seed(11);
        using var loss = LanguageModeling.Loss(stage.Forward(ids), target);
        loss.backward();
        var grads = lm.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad!.data<float>().ToArray());
        return (loss.item<float>(), grads);
    }

    [Fact]
    public void Stages_are_balanced_by_parameter_count_or_split_as_given()
    {
        // Embeddings as heavy as two layers go with the first stage's layers; the head with the last stage's.
        Assert.Equal([(0, 2), (2, 6)], PipelineStage.BalancedRanges([1, 1, 1, 1, 1, 1], 2, firstExtra: 2, lastExtra: 0));
        Assert.Equal([(0, 3), (3, 6)], PipelineStage.BalancedRanges([1, 1, 1, 1, 1, 1], 2, firstExtra: 0, lastExtra: 0));
        Assert.Equal([(0, 1), (1, 2), (2, 4)], PipelineStage.BalancedRanges([4, 3, 1, 1], 3, firstExtra: 0, lastExtra: 0));

        using var lm = TestModels.Create("llama");
        Assert.Equal([(0, 1), (1, 2)], PipelineStage.Partition(lm, 2));
        Assert.Equal([(0, 1), (1, 2)], PipelineStage.Partition(lm, 2, [1, 1]));
        Assert.Contains("pp_split", Assert.Throws<TianGongException>(() => PipelineStage.Partition(lm, 2, [2, 1])).Message);
        Assert.Contains("at least 3 decoder layers", Assert.Throws<TianGongException>(() => PipelineStage.Partition(lm, 3)).Message);
    }

    [Fact]
    public void A_tied_head_shares_the_token_embedding_between_first_and_last_stage()
    {
        using var lm = TestModels.Create("gpt2"); // tied
        var ranges = PipelineStage.Partition(lm, 2);
        using var first = new PipelineStage(lm, 0, 2, ranges[0]);
        using var last = new PipelineStage(lm, 1, 2, ranges[1]);
        var wte = lm.named_parameters().Single(p => p.name == "transformer.wte.weight").parameter;
        Assert.Same(wte, Assert.Single(first.TiedParameters));
        Assert.Contains(wte, first.Parameters);
        Assert.Contains(wte, last.Parameters);
        // Together the stages own every parameter, and only the tied one twice.
        Assert.Equal(lm.parameters().Count() + 1, first.Parameters.Count + last.Parameters.Count);
    }
}
