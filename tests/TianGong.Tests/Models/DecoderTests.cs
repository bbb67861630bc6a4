using TianGong.Models;
using TianGong.Training;

namespace TianGong.Tests.Models;

public class DecoderTests
{
    [Theory]
    [MemberData(nameof(TestModels.BothFamilies), MemberType = typeof(TestModels))]
    public void Changing_a_future_token_leaves_earlier_logits_unchanged(string family)
    {
        using var model = TestModels.Create(family);
        model.eval();
        using var _ = no_grad();
        var ids = randint(0, 64, [2, 16], dtype: ScalarType.Int64);
        var changed = ids.clone();
        changed[.., 10] = (changed[.., 10] + 1) % 64;
        var a = model.forward(ids);
        var b = model.forward(changed);
        Assert.True(allclose(a[.., ..10], b[.., ..10], rtol: 0, atol: 0), "positions before the change must not see it");
        Assert.False(allclose(a[.., 10..], b[.., 10..]), "positions from the change on must see it");
    }

    [Theory]
    [MemberData(nameof(TestModels.BothFamilies), MemberType = typeof(TestModels))]
    public void Kv_cache_decoding_equals_full_recomputation(string family)
    {
        using var model = TestModels.Create(family);
        model.eval();
        using var _ = no_grad();
        var ids = randint(0, 64, [3, 20], dtype: ScalarType.Int64);
        var full = model.forward(ids);                                            // (B, T, V)
        using var cache = model.CreateCache(3, 32);
        // A prefill of 7, then a chunk of 5 (the bottom-right-aligned mask case), then one token at a time.
        var parts = new List<Tensor> { model.forward(ids[.., ..7], cache), model.forward(ids[.., 7..12], cache) };
        for (int t = 12; t < 20; t++) parts.Add(model.forward(ids[.., t..(t + 1)], cache));
        var incremental = cat(parts, dim: 1);
        Assert.Equal(20, cache.Length);
        double maxDiff = (full - incremental).abs().max().item<float>();
        Assert.True(maxDiff < 1e-5, $"max difference {maxDiff}");
    }

    [Theory]
    [MemberData(nameof(TestModels.BothFamilies), MemberType = typeof(TestModels))]
    public void A_tiny_model_overfits_one_batch(string family)
    {
        using var model = TestModels.Create(family);
        var batch = randint(0, 64, [4, 17], dtype: ScalarType.Int64);
        var (input, target) = (batch[.., ..16], batch[.., 1..]);
        using var optimizer = new AdamW(model.named_parameters(), new AdamWOptions(WeightDecay: 0), Trainer.NoDecayNames(model));
        double first = 0, last = 0;
        for (int step = 0; step < 150; step++)
        {
            using var scope = NewDisposeScope();
            var loss = LanguageModeling.Loss(model.forward(input), target);
            loss.backward();
            optimizer.Step(1e-2);
            optimizer.ZeroGrad();
            if (step == 0) first = loss.item<float>();
            last = loss.item<float>();
        }
        Assert.True(first > 3.5, $"initial loss {first} should be near ln(64) = 4.16");
        Assert.True(last < 0.05, $"loss after 150 steps is {last}, expected near zero");
    }

    [Fact]
    public void Tied_models_have_no_lm_head_key_and_untied_ones_do()
    {
        using var tied = ModelConfigs.CreateCausalLM(TestModels.Gpt2(tied: true));
        using var untied = ModelConfigs.CreateCausalLM(TestModels.Llama(tied: false));
        Assert.DoesNotContain("lm_head.weight", tied.state_dict().Keys);
        Assert.Contains("transformer.h.1.attn.c_attn.weight", tied.state_dict().Keys);
        Assert.Contains("lm_head.weight", untied.state_dict().Keys);
        Assert.Contains("model.layers.1.self_attn.k_proj.weight", untied.state_dict().Keys);
        Assert.Equal([16, 32], untied.state_dict()["model.layers.1.self_attn.k_proj.weight"].shape);
    }
}
