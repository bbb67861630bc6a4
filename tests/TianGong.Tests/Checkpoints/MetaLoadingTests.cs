using TianGong.Checkpoints;
using TianGong.Models;

namespace TianGong.Tests.Checkpoints;

/// <summary>
/// Tests that build models on the meta device change TorchSharp's process-wide default device for a moment: they run
/// alone, after the parallel tests, so no other test creates a tensor meanwhile.
/// </summary>
[CollectionDefinition(nameof(GlobalTorchDefaults), DisableParallelization = true)]
public sealed class GlobalTorchDefaults;

[Collection(nameof(GlobalTorchDefaults))]
public sealed class MetaLoadingTests
{
    [Theory]
    [InlineData("gpt2")]
    [InlineData("bert")]
    [InlineData("t5")]
    [InlineData("llama")]
    public void A_model_built_on_the_meta_device_loads_the_same_parameters_as_one_built_with_random_init(string family)
    {
        var dir = TestModels.FixturePath("hf", family);
        using var ordinary = ModelFolder.Load(dir, null, buildOnMeta: false);
        using var meta = ModelFolder.Load(dir, null, buildOnMeta: true);
        Assert.Equal(DeviceType.CPU, get_default_device().type);
        var expected = ordinary.Module.state_dict();
        var actual = meta.Module.state_dict();
        Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
        foreach (var (key, tensor) in expected)
        {
            Assert.Equal(DeviceType.CPU, actual[key].device_type);
            Assert.True(tensor.equal(actual[key]).all().item<bool>(), key);
        }
        // Same numbers out of a forward pass: every replaced field is the one forward reads.
        using var ids = tensor(new long[] { 1, 5, 7, 2, 9 }).unsqueeze(0);
        using var _ = no_grad();
        using var a = Forward(ordinary.Module, ids);
        using var b = Forward(meta.Module, ids);
        Assert.True(a.equal(b).all().item<bool>());
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("t5")]
    public void Converting_on_the_way_in_gives_the_same_bf16_parameters_as_casting_a_built_model(string family)
    {
        var dir = TestModels.FixturePath("hf", family);
        using var ordinary = ModelFolder.Load(dir, ScalarType.BFloat16, buildOnMeta: false);
        using var meta = ModelFolder.Load(dir, ScalarType.BFloat16, buildOnMeta: true);
        foreach (var (key, tensor) in ordinary.Module.state_dict())
        {
            var actual = meta.Module.state_dict()[key];
            Assert.Equal(ScalarType.BFloat16, actual.dtype);
            Assert.True(tensor.equal(actual).all().item<bool>(), key);
        }
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("bert")]
    [InlineData("t5")]
    [InlineData("llama")]
    public void Every_family_builds_on_the_meta_device_without_memory(string family)
    {
        var config = ModelConfigs.Load(TestModels.FixturePath("hf", family, "config.json"));
        using var model = MetaModel.TryBuild(() => ModelConfigs.CreateModel(config));
        Assert.NotNull(model);
        Assert.All(model.parameters(), p => Assert.Equal(DeviceType.META, p.device_type));
        Assert.Equal(DeviceType.CPU, get_default_device().type);
    }

    [Fact]
    public void Parameters_of_a_meta_built_model_train_and_save_like_any_other()
    {
        var dir = TestModels.FixturePath("hf", "gpt2");
        using var loaded = ModelFolder.Load(dir, null, buildOnMeta: true);
        var lm = loaded.AsCausalLM("test");
        Assert.All(lm.parameters(), p => Assert.True(p.requires_grad));
        using var ids = tensor(new long[] { 1, 5, 7, 2, 9 }).unsqueeze(0);
        using var loss = lm.forward(ids, null).sum();
        loss.backward();
        Assert.All(lm.parameters(), p => Assert.NotNull(p.grad));
        var saved = TestModels.TempDir();
        ModelFolder.Save(saved, lm, loaded.Config, tokenizer: null);
        using var again = ModelFolder.Load(saved, null, buildOnMeta: false);
        foreach (var (key, t) in lm.state_dict())
            Assert.True(t.equal(again.Module.state_dict()[key]).all().item<bool>(), key);
    }

    [Fact]
    public void Training_a_model_whose_weights_are_mapped_from_the_file_never_writes_to_the_file()
    {
        var dir = TestModels.TempDir();
        foreach (var file in new[] { "config.json", "model.safetensors" })
            File.Copy(TestModels.FixturePath("hf", "gpt2", file), Path.Combine(dir, file));
        var before = File.ReadAllBytes(Path.Combine(dir, "model.safetensors"));
        using var loaded = ModelFolder.Load(dir, ScalarType.Float32, buildOnMeta: true);
        using (no_grad())
            foreach (var p in loaded.Module.parameters()) p.add_(1.0f);
        Assert.Equal(before, File.ReadAllBytes(Path.Combine(dir, "model.safetensors")));

        // Saving over the mapped file (a save renames a new file into place) keeps the model's values intact.
        ModelFolder.SaveWeights(Path.Combine(dir, "model.safetensors"), loaded.Module);
        var saved = SafeTensors.Load(Path.Combine(dir, "model.safetensors"));
        foreach (var (key, t) in loaded.Module.state_dict())
            Assert.True(t.equal(saved[key]).all().item<bool>(), key);
        Assert.NotEqual(before, File.ReadAllBytes(Path.Combine(dir, "model.safetensors")));
    }

    private static Tensor Forward(nn.Module module, Tensor ids) => module switch
    {
        CausalLM lm => lm.forward(ids, null),
        IEncoderModel encoder => encoder.Encode(ids).LastHiddenState,
        Seq2SeqLM t5 => t5.forward(ids, ids),
        _ => throw new InvalidOperationException(module.GetType().Name),
    };
}
