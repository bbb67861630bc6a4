using System.Text.Json.Nodes;
using TianGong.Checkpoints;

namespace TianGong.Tests.Models;

/// <summary>Tiny models saved by transformers 5.3 with the logits its PyTorch code produced: our forward must match to 1e-4.</summary>
public class HuggingFaceParityTests
{
    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void Logits_match_transformers(string family)
    {
        var dir = TestModels.FixturePath("hf", family);
        using var loaded = ModelFolder.Load(dir);
        var expected = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "expected.json")))!;
        using var ids = FromFixture(expected["inputs"]!["input_ids"]!, ScalarType.Int64);
        using var logits = FromFixture(expected["outputs"]!["logits"]!, ScalarType.Float32);
        using var _ = no_grad();
        using var actual = loaded.AsCausalLM("test").forward(ids);
        Assert.Equal(logits.shape, actual.shape);
        double maxDiff = (actual - logits).abs().max().item<float>();
        Assert.True(maxDiff < 1e-4, $"{family}: max |ours - transformers| = {maxDiff}");
    }

    [Fact]
    public void A_bare_trunk_checkpoint_with_causal_mask_buffers_loads_like_the_hub_gpt2_files()
    {
        // The hub's gpt2 files were saved from GPT2Model: keys lack "transformer." and carry attn.bias mask buffers.
        var dir = TestModels.TempDir();
        File.Copy(TestModels.FixturePath("hf", "gpt2", "config.json"), Path.Combine(dir, "config.json"));
        var tensors = SafeTensors.Load(TestModels.FixturePath("hf", "gpt2", "model.safetensors"));
        var bare = tensors.ToDictionary(kv => kv.Key["transformer.".Length..], kv => kv.Value);
        bare["h.0.attn.bias"] = ones(1, 1, 64, 64).tril();
        bare["h.1.attn.bias"] = ones(1, 1, 64, 64).tril();
        SafeTensors.Save(Path.Combine(dir, "model.safetensors"), bare);
        using var fromBare = ModelFolder.Load(dir);
        using var fromFixture = ModelFolder.Load(TestModels.FixturePath("hf", "gpt2"));
        using var ids = randint(0, 256, [1, 10], dtype: ScalarType.Int64);
        using var _ = no_grad();
        Assert.True(fromBare.AsCausalLM("test").forward(ids).equal(fromFixture.AsCausalLM("test").forward(ids)).all().item<bool>());

        // A tensor that is neither the model's nor a known leftover is still reported by name.
        bare["h.0.mystery"] = zeros(3);
        SafeTensors.Save(Path.Combine(dir, "model.safetensors"), bare);
        var e = Assert.Throws<TianGongException>(() => ModelFolder.Load(dir));
        Assert.Contains("unexpected: h.0.mystery", e.Message);
    }

    private static Tensor FromFixture(JsonNode node, ScalarType dtype)
    {
        var shape = node["shape"]!.AsArray().Select(s => s!.GetValue<long>()).ToArray();
        var data = node["data"]!.AsArray();
        return dtype == ScalarType.Int64
            ? tensor(data.Select(d => d!.GetValue<long>()).ToArray(), shape)
            : tensor(data.Select(d => d!.GetValue<float>()).ToArray(), shape);
    }
}
