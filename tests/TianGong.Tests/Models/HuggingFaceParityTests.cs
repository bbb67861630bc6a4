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

    private static Tensor FromFixture(JsonNode node, ScalarType dtype)
    {
        var shape = node["shape"]!.AsArray().Select(s => s!.GetValue<long>()).ToArray();
        var data = node["data"]!.AsArray();
        return dtype == ScalarType.Int64
            ? tensor(data.Select(d => d!.GetValue<long>()).ToArray(), shape)
            : tensor(data.Select(d => d!.GetValue<float>()).ToArray(), shape);
    }
}
