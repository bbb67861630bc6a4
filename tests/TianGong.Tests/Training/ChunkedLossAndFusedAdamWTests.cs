using TianGong.Models;
using TianGong.Training;

namespace TianGong.Tests.Training;

/// <summary>
/// The faster training step (LM head + cross-entropy block by block, AdamW in one pass per parameter) gives the losses
/// and gradients of the plain path: full logits through <c>F.cross_entropy</c>, AdamW as separate libtorch ops.
/// </summary>
[Collection(nameof(GlobalRandomState))] // two models from one seed: no other test may draw from the global generator in between
public class ChunkedLossAndFusedAdamWTests
{
    private static (Tensor Input, Tensor Target) Batch(long seed, int vocab, bool withIgnored)
    {
        var g = new Generator(seed: (ulong)seed);
        var tokens = randint(0, vocab, [3, 11], generator: g, dtype: ScalarType.Int64);
        var target = tokens[.., 1..].clone();
        if (withIgnored) target[0, ..4] = tensor(-100L);                           // prompt-masked rows, as fine-tuning has
        return (tokens[.., ..10], target);
    }

    [Theory]
    [InlineData("gpt2")]   // tied head: the gradient of W lands on the token embedding
    [InlineData("llama")]  // untied lm_head
    public void The_chunked_loss_and_its_gradients_match_full_cross_entropy(string family)
    {
        using var plain = TestModels.Create(family, seed: 3);
        using var chunked = TestModels.Create(family, seed: 3);
        var head = ChunkedLmHeadLoss.PlainHeadWeight(chunked);
        Assert.NotNull(head);
        Assert.Same(chunked.named_parameters().First(p => p.name == (family == "gpt2" ? "transformer.wte.weight" : "lm_head.weight")).parameter, head);
        var (input, target) = Batch(1, 64, withIgnored: true);

        var expected = LanguageModeling.Loss(plain.forward(input), target);
        expected.backward();
        var actual = ChunkedLmHeadLoss.Loss(chunked.Hidden(input), head!, target, rowsPerChunk: 7); // 30 rows: 5 blocks, the last short
        actual.backward();

        Assert.Equal(expected.item<float>(), actual.item<float>(), 1e-5f);
        var chunkedGrads = chunked.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad!);
        foreach (var (name, p) in plain.named_parameters())
            Assert.True(p.grad!.allclose(chunkedGrads[name], rtol: 1e-4, atol: 1e-6), $"{name}: max |Δ| {(p.grad! - chunkedGrads[name]).abs().max().item<float>()}");
    }

    [Fact]
    public void Without_gradients_the_chunked_loss_is_the_mean_cross_entropy()
    {
        using var model = TestModels.Create("llama", seed: 4);
        var (input, target) = Batch(2, 64, withIgnored: false);
        using var _ = no_grad();
        var expected = LanguageModeling.Loss(model.forward(input), target).item<float>();
        var actual = ChunkedLmHeadLoss.Loss(model.Hidden(input), ChunkedLmHeadLoss.PlainHeadWeight(model)!, target, rowsPerChunk: 8).item<float>();
        Assert.Equal(expected, actual, 1e-5f);
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void Training_steps_give_the_same_losses_as_the_plain_path(string family)
    {
        using var plain = TestModels.Create(family, seed: 5);
        using var fast = TestModels.Create(family, seed: 5);
        using var plainOptimizer = new AdamW(plain.named_parameters(), new AdamWOptions(Fused: false), Trainer.NoDecayNames(plain));
        using var fastOptimizer = new AdamW(fast.named_parameters(), new AdamWOptions(), Trainer.NoDecayNames(fast));
        for (int step = 0; step < 5; step++)
        {
            using var scope = NewDisposeScope();
            var (input, target) = Batch(10 + step, 64, withIgnored: false);
            var plainLoss = LanguageModeling.Loss(plain.forward(input), target);
            plainLoss.backward();
            plainOptimizer.Step(3e-3);
            plainOptimizer.ZeroGrad();
            var fastLoss = LanguageModeling.NextTokenLoss(fast, new TokenBatch(input, target)).Loss;
            fastLoss.backward();
            fastOptimizer.Step(3e-3);
            fastOptimizer.ZeroGrad();
            Assert.Equal(plainLoss.item<float>(), fastLoss.item<float>(), 1e-5f);
        }
        // Weights are not compared one by one: where a gradient is zero in exact arithmetic (GPT-2's key bias, which softmax
        // ignores) both paths see rounding noise, and Adam turns noise of either sign into a full step of that sign.
        // The weights moved: the losses compared are not those of two untouched models.
        using var fresh = TestModels.Create(family, seed: 5);
        var (freshName, freshWeight) = fresh.named_parameters().First(p => p.parameter.dim() == 2);
        Assert.False(freshWeight.allclose(fast.named_parameters().First(p => p.name == freshName).parameter));
    }

    [Fact]
    public void The_fused_update_is_adamw_for_one_parameter_and_decay()
    {
        // Larger than one parallel block of the fused kernel, with an odd length so the scalar tail runs too.
        var g = new Generator(seed: 9);
        var start = randn([70_001], generator: g);
        var w1 = nn.Parameter(start.clone());
        var w2 = nn.Parameter(start.clone());
        using var fused = new AdamW([("w", w1)], new AdamWOptions(0.9, 0.95, 1e-8, 0.1), new HashSet<string>());
        using var plain = new AdamW([("w", w2)], new AdamWOptions(0.9, 0.95, 1e-8, 0.1, Fused: false), new HashSet<string>());
        for (int step = 0; step < 3; step++)
        {
            var grad = randn([70_001], generator: g);
            w1.grad = grad.clone();
            w2.grad = grad.clone();
            fused.Step(1e-2);
            plain.Step(1e-2);
        }
        Assert.True(w1.allclose(w2, rtol: 1e-5, atol: 1e-7), $"max |Δ| {(w1 - w2).abs().max().item<float>()}");
        Assert.True((w1 - start).abs().max().item<float>() > 1e-3, "the weights did not move");
    }
}
