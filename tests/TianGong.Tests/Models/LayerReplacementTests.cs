using TianGong.Checkpoints;
using TianGong.Models;
using TianGong.Models.Layers;
using TorchSharp.Modules;

namespace TianGong.Tests.Models;

/// <summary>The identity of the replacement mechanism: calls the original projection and nothing else.</summary>
internal sealed class PassThroughLinear : LinearWrapper
{
    public PassThroughLinear(LinearParts original) : base(nameof(PassThroughLinear), original) => RegisterComponents();

    public override Tensor forward(Tensor x) => BaseForward(x);
}

/// <summary>Adds a trainable (out) offset beside the original: a wrapper with a key of its own.</summary>
internal sealed class OffsetLinear : LinearWrapper
{
    private readonly Parameter offset;

    public OffsetLinear(LinearParts original) : base(nameof(OffsetLinear), original)
    {
        offset = new Parameter(ones(original.OutFeatures));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => BaseForward(x) + offset;
}

public class LayerReplacementTests
{
    public static IEnumerable<object[]> Folders() => [["gpt2"], ["llama"], ["bert"], ["t5"]];

    [Theory]
    [MemberData(nameof(Folders))]
    public void Replacing_every_linear_of_a_hf_folder_with_a_pass_through_changes_no_logit_and_no_saved_byte(string family)
    {
        using var loaded = ModelFolder.Load(TestModels.FixturePath("hf", family));
        var model = loaded.Module;
        var dir = TestModels.TempDir();
        using var ids = tensor(new long[] { 3, 1, 4, 1, 5, 9, 2, 6 }).unsqueeze(0);
        using var before = Run(model, ids);
        ModelFolder.SaveWeights(Path.Combine(dir, "before.safetensors"), model);

        var linear = LayerReplacement.LinearLayerNames(model);
        var replaced = LayerReplacement.Replace(model, new LayerSelector(linear.ToList()), (_, parts) => new PassThroughLinear(parts));

        Assert.Equal(linear, replaced);
        Assert.All(replaced, name => Assert.IsType<PassThroughLinear>(model.named_modules().Single(m => m.name == name).module));
        using var after = Run(model, ids);
        Assert.True(before.eq(after).all().item<bool>(), "logits must be bit-identical");
        ModelFolder.SaveWeights(Path.Combine(dir, "after.safetensors"), model);
        Assert.Equal(File.ReadAllBytes(Path.Combine(dir, "before.safetensors")), File.ReadAllBytes(Path.Combine(dir, "after.safetensors")));
    }

    [Theory]
    [MemberData(nameof(TestModels.DecoderFamilies), MemberType = typeof(TestModels))]
    public void Every_decoder_family_replaces_its_linear_layers_without_changing_logits(string family)
    {
        using var model = TestModels.Create(family);
        model.eval();
        using var ids = randint(0, 64, [2, 12], dtype: ScalarType.Int64);
        using var before = Run(model, ids);
        var replaced = LayerReplacement.Replace(model, LayerSelector.Parse(LayerSelector.AllLinear), (_, parts) => new PassThroughLinear(parts));
        Assert.DoesNotContain(replaced, n => n.EndsWith("lm_head"));
        Assert.True(replaced.Count >= 8, $"only {replaced.Count} layers replaced");
        using var after = Run(model, ids);
        Assert.True(before.eq(after).all().item<bool>());
    }

    [Fact]
    public void Patterns_follow_peft_names_globs_and_all_linear()
    {
        using var model = TestModels.Create("llama");
        var names = LayerReplacement.LinearLayerNames(model);
        Assert.Equal(["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj", "model.layers.0.self_attn.v_proj", "model.layers.1.self_attn.v_proj"],
            names.Where(LayerSelector.Parse("q_proj,v_proj").Matches).OrderBy(n => n.Contains("v_proj")).ToList());
        Assert.Equal(["model.layers.1.mlp.down_proj"], names.Where(LayerSelector.Parse("model.layers.1.*.down_proj").Matches).ToList());
        Assert.Contains("lm_head", names);
        Assert.DoesNotContain("lm_head", names.Where(LayerSelector.Parse("all-linear").Matches));
        Assert.Equal(14, names.Count(LayerSelector.Parse("all-linear").Matches)); // 2 layers × 7 projections
    }

    [Fact]
    public void A_pattern_that_matches_nothing_is_an_error_listing_the_linear_layers()
    {
        using var model = TestModels.Create("gpt2");
        var e = Assert.Throws<TianGongException>(() =>
            LayerReplacement.Replace(model, LayerSelector.Parse("q_proj"), (_, parts) => new PassThroughLinear(parts)));
        Assert.Contains("'q_proj' match no linear layer", e.Message);
        Assert.Contains("transformer.h.0.attn.c_attn", e.Message);
        Assert.Contains("transformer.h.1.mlp.c_proj", e.Message);
    }

    [Fact]
    public void A_wrapper_keeps_the_base_keys_adds_its_own_and_follows_dtype_moves()
    {
        using var model = TestModels.Create("llama");
        var baseKeys = model.state_dict().Keys.ToHashSet();
        LayerReplacement.Replace(model, LayerSelector.Parse("o_proj"), (_, parts) => new OffsetLinear(parts));
        var keys = model.state_dict().Keys.ToHashSet();
        Assert.Subset(keys, baseKeys);
        Assert.Equal(["model.layers.0.self_attn.o_proj.offset", "model.layers.1.self_attn.o_proj.offset"], keys.Except(baseKeys).Order().ToList());
        // The offset changes the output; the wrapped weight is the same parameter the model had.
        using var ids = randint(0, 64, [1, 6], dtype: ScalarType.Int64);
        using var plain = TestModels.Create("llama");
        Assert.False(allclose(plain.forward(ids), model.forward(ids)));
        model.to(ScalarType.BFloat16);
        var wrapper = (OffsetLinear)model.named_modules().Single(m => m.name == "model.layers.0.self_attn.o_proj").module;
        Assert.Equal(ScalarType.BFloat16, wrapper.Parts.Weight.dtype);
        Assert.Equal(ScalarType.BFloat16, model.forward(ids).dtype);
    }

    private static Tensor Run(nn.Module model, Tensor ids)
    {
        using var _ = no_grad();
        return model switch
        {
            CausalLM lm => lm.forward(ids),
            IEncoderModel encoder => encoder.Encode(ids).LastHiddenState,
            Seq2SeqLM s2s => s2s.forward(ids, ids[.., ..4]),
            _ => throw new ArgumentException(model.GetType().Name),
        };
    }
}
