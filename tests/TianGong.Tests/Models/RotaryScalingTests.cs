using System.Text.Json.Nodes;
using TianGong.Models;
using TianGong.Models.Layers;
using TianGong.Models.Llama;

namespace TianGong.Tests.Models;

/// <summary>Each rope_type's inverse frequencies against numbers computed here, element by element, from the published formulas.</summary>
public class RotaryScalingTests
{
    private static double[] Values(Tensor t) => t.to(ScalarType.Float64).data<double>().ToArray();

    private static double[] Reference(int dim, double theta) =>
        Enumerable.Range(0, dim / 2).Select(i => 1.0 / Math.Pow(theta, 2.0 * i / dim)).ToArray();

    private static void AssertClose(double[] expected, double[] actual, double relTol = 1e-12)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= relTol * Math.Abs(expected[i]), $"[{i}] expected {expected[i]}, got {actual[i]}");
    }

    [Fact]
    public void Default_frequencies_are_one_over_theta_to_the_2i_over_d_and_unchanged_by_the_scaling_code()
    {
        AssertClose(Reference(16, 10000), Values(RotaryEmbedding.DefaultInvFreq(16, 10000)));
        var (inv, scaling) = RotaryEmbedding.InverseFrequencies(new RopeParameters(10000), 16, 128, seqLen: null);
        AssertClose(Reference(16, 10000), Values(inv));
        Assert.Equal(1.0, scaling);

        // The table form: position p rotates dimension pair i by p·inv_freq[i].
        using var rope = new RotaryEmbedding(16, 128, 10000.0);
        var x = randn(1, 1, 1, 16, dtype: ScalarType.Float64).to(ScalarType.Float32);
        var y = rope.Apply(x, start: 5);
        var freq = Reference(16, 10000);
        for (int i = 0; i < 8; i++)
        {
            double a = 5 * freq[i], x1 = x[0, 0, 0, i].item<float>(), x2 = x[0, 0, 0, i + 8].item<float>();
            // Tolerance, not rounding to 5 places: two float32 values 5e-6 apart can round to different 5th decimals.
            Assert.Equal(x1 * Math.Cos(a) - x2 * Math.Sin(a), y[0, 0, 0, i].item<float>(), 1e-5);
            Assert.Equal(x2 * Math.Cos(a) + x1 * Math.Sin(a), y[0, 0, 0, i + 8].item<float>(), 1e-5);
        }
    }

    [Fact]
    public void Linear_scaling_divides_every_frequency_so_position_2p_rotates_like_p()
    {
        AssertClose(Reference(16, 10000).Select(f => f / 4).ToArray(), Values(RotaryEmbedding.LinearInvFreq(16, 10000, 4)));
        using var plain = new RotaryEmbedding(16, 64, 10000.0);
        using var linear = new RotaryEmbedding(16, 64, new RopeParameters(10000, RopeType: "linear", Factor: 2));
        var x = randn(1, 2, 1, 16);
        Assert.True(allclose(plain.Apply(x, 7), linear.Apply(x, 14), rtol: 0, atol: 1e-5));
    }

    [Fact]
    public void Dynamic_ntk_is_default_up_to_the_trained_length_and_grows_theta_beyond_it()
    {
        AssertClose(Reference(16, 10000), Values(RotaryEmbedding.DynamicNtkInvFreq(16, 10000, 2, 128, seqLen: 100)));
        // 256 tokens, trained 128, factor 2: theta · (2·256/128 − 1)^(16/14) = theta · 3^(8/7).
        double theta = 10000 * Math.Pow(3, 16.0 / 14);
        AssertClose(Reference(16, theta), Values(RotaryEmbedding.DynamicNtkInvFreq(16, 10000, 2, 128, seqLen: 256)), 1e-10);

        // In a model: identical logits within max_position_embeddings, and longer sequences are accepted.
        var config = TestModels.Llama();
        manual_seed(3);
        using var plain = ModelConfigs.CreateCausalLM(config);
        plain.InitializeWeights();
        using var dynamic = ModelConfigs.CreateCausalLM(config with { RopeScaling = new RopeParameters(RopeType: "dynamic", Factor: 2) });
        dynamic.load_state_dict(plain.state_dict());
        using var _ = no_grad();
        var ids = randint(0, 64, [1, 64], dtype: ScalarType.Int64);
        Assert.True(allclose(plain.forward(ids), dynamic.forward(ids), rtol: 0, atol: 0));
        Assert.Throws<TianGongException>(() => plain.forward(randint(0, 64, [1, 80], dtype: ScalarType.Int64)));
        Assert.Equal([1, 80, 64], dynamic.forward(randint(0, 64, [1, 80], dtype: ScalarType.Int64)).shape);
    }

    [Fact]
    public void Llama3_scaling_matches_the_reference_apply_scaling_on_llama_3_1_settings()
    {
        // Llama 3.1: head_dim 128, theta 500000, factor 8, low 1, high 4, original context 8192.
        var freqs = Reference(128, 500000);
        double lowWavelen = 8192 / 1.0, highWavelen = 8192 / 4.0;
        var expected = freqs.Select(f =>
        {
            double wavelen = 2 * Math.PI / f;
            if (wavelen < highWavelen) return f;
            if (wavelen > lowWavelen) return f / 8;
            double smooth = (8192 / wavelen - 1) / (4 - 1);
            return (1 - smooth) * f / 8 + smooth * f;
        }).ToArray();
        // All three bands occur, so each branch is checked.
        Assert.Contains(freqs, f => 2 * Math.PI / f < highWavelen);
        Assert.Contains(freqs, f => 2 * Math.PI / f > lowWavelen);
        Assert.Contains(freqs, f => 2 * Math.PI / f >= highWavelen && 2 * Math.PI / f <= lowWavelen);
        AssertClose(expected, Values(RotaryEmbedding.Llama3InvFreq(128, 500000, 8, 1, 4, 8192)));
    }

    [Fact]
    public void Yarn_keeps_fast_dimensions_divides_slow_ones_and_scales_attention()
    {
        // dim 64, theta 10000, factor 4, original 256: correction dims for beta 32 and 1, floored and ceiled.
        int dim = 64;
        double Correction(double rotations) => dim * Math.Log(256 / (rotations * 2 * Math.PI)) / (2 * Math.Log(10000));
        double low = Math.Max(Math.Floor(Correction(32)), 0), high = Math.Min(Math.Ceiling(Correction(1)), dim - 1);
        var freqs = Reference(dim, 10000);
        var expected = freqs.Select((f, i) =>
        {
            double ramp = Math.Clamp((i - low) / (high - low), 0, 1); // 0: keep (extrapolate), 1: divide (interpolate)
            return f / 4 * ramp + f * (1 - ramp);
        }).ToArray();
        AssertClose(expected, Values(RotaryEmbedding.YarnInvFreq(dim, 10000, 4, 256, 32, 1, truncate: true)));
        Assert.Equal(freqs[0], expected[0]);
        Assert.Equal(freqs[^1] / 4, expected[^1], 15);

        Assert.Equal(0.1 * Math.Log(4) + 1, RotaryEmbedding.YarnAttentionFactor(4, null, null), 12);
        Assert.Equal((0.1 * 0.707 * Math.Log(40) + 1) / (0.1 * 0.707 * Math.Log(40) + 1), RotaryEmbedding.YarnAttentionFactor(40, 0.707, 0.707), 12);
        // The scaling multiplies cos and sin, so position 0 (no rotation) scales q and k by it.
        using var rope = new RotaryEmbedding(dim, 1024, new RopeParameters(10000, RopeType: "yarn", Factor: 4, OriginalMaxPositionEmbeddings: 256));
        var x = randn(1, 1, 1, dim);
        Assert.True(allclose(rope.Apply(x, 0), x * (0.1 * Math.Log(4) + 1), rtol: 1e-6, atol: 1e-6));
    }

    [Fact]
    public void Unknown_or_incomplete_rope_scaling_is_an_error_naming_the_field()
    {
        var e = Assert.Throws<TianGongException>(() => ModelConfigs.Parse(JsonNode.Parse("""
            {"model_type": "llama", "rope_parameters": {"rope_theta": 10000.0, "rope_type": "longrope", "factor": 2.0}}
            """), "config.json", strict: false));
        Assert.Contains("rope_parameters.rope_type", e.Message);
        Assert.Contains("default, linear, dynamic, llama3, yarn", e.Message);

        var missing = Assert.Throws<TianGongException>(() => ModelConfigs.Parse(JsonNode.Parse("""
            {"model_type": "llama", "rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0}}
            """), "config.json", strict: false));
        Assert.Contains("rope_scaling.high_freq_factor", missing.Message);

        var llama31 = (LlamaConfig)ModelConfigs.Parse(JsonNode.Parse("""
            {"model_type": "llama", "rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
             "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}
            """), "config.json", strict: false);
        Assert.Equal(500000.0, llama31.RotaryTheta);
        Assert.Equal("llama3", llama31.Rope.Kind);
    }
}
