using System.Runtime.Intrinsics;
using TianGong.Models;
using TianGong.Models.Layers;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Tests.Models;

/// <summary>The decode-step norms and activations (DecodeNorms, DecodeActivations, DecodeLayerNorm) against libtorch.</summary>
public class DecodeNormTests
{
    /// <summary>Whether this CPU runs the kernels; run with DOTNET_EnableAVX512=0 for the 256-bit activation path.</summary>
    private static bool Supported => Vector256.IsHardwareAccelerated;

    public static IEnumerable<object[]> Shapes()
    {
        foreach (int rows in new[] { 1, 2, 7, 16, DecodeNorms.MaxRows })
            foreach (int width in new[] { 5, 37, 512, 515 })
                yield return [rows, width];
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Norms_match_libtorch(int rows, int width)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        manual_seed(rows * 1000 + width);
        var x = randn(rows, 1, width) * 3 + 1;               // a mean and a scale to remove
        var (weight, bias) = (randn(width), randn(width));
        var layerNorm = DecodeNorms.TryLayerNorm(x, weight, bias, 1e-5);
        var noBias = DecodeNorms.TryLayerNorm(x, weight, null, 1e-5);
        var rms = DecodeNorms.TryRmsNorm(x, weight, 1e-6);
        if (!Supported)
        {
            Assert.Null(layerNorm);
            return;
        }
        AssertClose(F.layer_norm(x, [width], weight, bias, 1e-5), layerNorm!);
        AssertClose(F.layer_norm(x, [width], weight, null, 1e-5), noBias!);
        var x64 = x.to(float64);
        AssertClose(weight * (x64 * rsqrt(x64.square().mean([-1L], keepdim: true) + 1e-6)), rms!);
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Activations_match_libtorch(int rows, int width)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        manual_seed(rows * 1000 + width + 1);
        var h = randn(rows, 1, 4 * width + 3) * 4;           // odd length: a padded last vector
        h[0, 0, 0] = tensor(-120f);                           // e^(−2u) saturates: gelu → 0
        h[0, 0, 1] = tensor(90f);
        var (gate, up) = (randn(rows, 1, width) * 4, randn(rows, 1, width));
        gate[0, 0, 0] = tensor(-100f);
        var gelu = DecodeActivations.TryGeluTanh(h);
        var silu = DecodeActivations.TrySiluTimes(gate, up);
        if (!Supported)
        {
            Assert.Null(gelu);
            return;
        }
        AssertClose(F.gelu(h.to(float64), TorchSharp.Modules.GELU.Approximate.tanh), gelu!);
        AssertClose(F.silu(gate.to(float64)) * up, silu!);
        Assert.False(gelu!.isnan().any().item<bool>());
    }

    [Fact]
    public void A_row_is_bit_identical_alone_and_among_sixteen()
    {
        if (!Supported) return;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        manual_seed(3);
        const int width = 515;
        var x = randn(16, width);
        var (weight, bias) = (randn(width), randn(width));
        var h = randn(16, 4 * width);
        var (gate, up) = (randn(16, width), randn(16, width));
        var all = new[]
        {
            DecodeNorms.TryLayerNorm(x, weight, bias, 1e-5)!, DecodeNorms.TryRmsNorm(x, weight, 1e-5)!,
            DecodeActivations.TryGeluTanh(h)!, DecodeActivations.TrySiluTimes(gate, up)!,
        };
        foreach (int r in new[] { 0, 5, 15 })
        {
            // Alone, and at an address that is not a multiple of a vector (3 floats in).
            foreach (int offset in new[] { 0, 3 })
            {
                Tensor Row(Tensor t) => empty(t.shape[1] + offset)[offset..].copy_(t[r]).unsqueeze(0);
                var one = new[]
                {
                    DecodeNorms.TryLayerNorm(Row(x), weight, bias, 1e-5)!, DecodeNorms.TryRmsNorm(Row(x), weight, 1e-5)!,
                    DecodeActivations.TryGeluTanh(Row(h))!, DecodeActivations.TrySiluTimes(Row(gate), Row(up))!,
                };
                for (int i = 0; i < all.Length; i++)
                    Assert.True(one[i][0].equal(all[i][r]).all().item<bool>(), $"op {i}, row {r}, offset {offset}");
            }
        }
    }

    [Fact]
    public void Leaves_gradients_large_batches_and_other_dtypes_to_libtorch()
    {
        using var scope = NewDisposeScope();
        var weight = ones(8).requires_grad_();
        var x = randn(2, 8);
        Assert.Null(DecodeNorms.TryLayerNorm(x, weight, null, 1e-5));         // the weight wants a gradient
        Assert.Null(DecodeNorms.TryRmsNorm(x.requires_grad_(), ones(8), 1e-5)); // the input does
        using var _ = no_grad();
        Assert.Null(DecodeNorms.TryRmsNorm(randn(DecodeNorms.MaxRows + 1, 8), ones(8), 1e-5)); // prefill
        Assert.Null(DecodeActivations.TryGeluTanh(randn(2, 8, dtype: float64)));
        Assert.Null(DecodeActivations.TrySiluTimes(randn(2, 8), randn(3, 8)));    // shapes differ
        Assert.Null(DecodeNorms.TryLayerNorm(randn(2, 9), ones(8), null, 1e-5)); // width differs
        Assert.Equal(Supported, DecodeNorms.TryLayerNorm(randn(2, 3, 8).transpose(0, 1), ones(8), null, 1e-5) is not null); // strided: copied
    }

    [Fact]
    public void DecodeLayerNorm_keeps_nn_LayerNorm_keys_and_values_and_trains_with_libtorch()
    {
        using var scope = NewDisposeScope();
        manual_seed(9);
        var ours = new DecodeLayerNorm(37, 1e-5);
        var theirs = nn.LayerNorm(37, 1e-5);
        Assert.Equal(theirs.state_dict().Keys.OrderBy(k => k), ours.state_dict().Keys.OrderBy(k => k));
        foreach (var key in new[] { "weight", "bias" })
            Assert.True(ours.state_dict()[key].equal(theirs.state_dict()[key]).all().item<bool>(), key);
        var mine = ours.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        using (no_grad())
        {
            mine["weight"].copy_(randn(37));
            mine["bias"].copy_(randn(37));
            theirs.weight!.copy_(mine["weight"]);
            theirs.bias!.copy_(mine["bias"]);
        }
        var x = randn(4, 37);
        // Training, even under no_grad (a recomputed block's first forward): libtorch's own bits.
        using (no_grad()) Assert.True(ours.forward(x).equal(theirs.forward(x)).all().item<bool>());
        var y = ours.forward(x);
        Assert.True(y.equal(theirs.forward(x)).all().item<bool>());
        y.square().sum().backward();
        theirs.forward(x).square().sum().backward();
        Assert.True(mine["weight"].grad!.equal(theirs.weight!.grad!).all().item<bool>());
        Assert.True(mine["bias"].grad!.equal(theirs.bias!.grad!).all().item<bool>());
        ours.eval();
        using (no_grad()) Assert.True(allclose(ours.forward(x), theirs.forward(x), rtol: 1e-5, atol: 1e-5));
    }

    [Theory]
    [MemberData(nameof(TestModels.DecoderFamilies), MemberType = typeof(TestModels))]
    public void Greedy_decode_with_the_kernels_matches_libtorch_and_training_is_unchanged(string family)
    {
        using var scope = NewDisposeScope();
        using var model = TestModels.Create(family, seed: 13);
        var prompt = randint(0, 64, [4, 6]);
        var targets = randint(0, 64, [4, 6]);
        // Training mode: the loss with autograd and under no_grad (as Recompute's first forward) are the same bits.
        model.train();
        var loss = F.cross_entropy(model.forward(prompt).flatten(0, 1), targets.flatten());
        using (no_grad())
        {
            var again = F.cross_entropy(model.forward(prompt).flatten(0, 1), targets.flatten());
            Assert.True(again.equal(loss).item<bool>(), $"{loss.item<float>()} vs {again.item<float>()}");
        }
        loss.backward();
        Assert.All(model.parameters(), p => Assert.NotNull(p.grad));
        model.eval();
        // With autograd every op is libtorch's; under no_grad the decode kernels take the 4-row steps.
        TestModels.AssertKernelDecodeMatchesLibtorch(model, prompt);
    }

    [Fact]
    public void Gpt2_state_dict_keys_are_the_hugging_face_ones()
    {
        using var model = TestModels.Create("gpt2");
        var keys = model.state_dict().Keys.ToHashSet();
        foreach (var key in new[] { "transformer.h.0.ln_1.weight", "transformer.h.0.ln_1.bias", "transformer.h.1.ln_2.bias", "transformer.ln_f.weight", "transformer.ln_f.bias" })
            Assert.Contains(key, keys);
        Assert.DoesNotContain(keys, k => k.Contains("DecodeLayerNorm", StringComparison.Ordinal));
        Assert.All(model.named_parameters().Where(p => p.name.Contains("ln_")), p =>
            Assert.True(p.name.EndsWith(".bias") ? p.parameter.eq(0).all().item<bool>() : p.parameter.eq(1).all().item<bool>(), p.name));
    }

    private static void AssertClose(Tensor expected, Tensor actual)
    {
        Assert.Equal(expected.shape, actual.shape);
        Assert.Equal(ScalarType.Float32, actual.dtype);
        double scale = Math.Max(1, expected.to(float64).abs().max().item<double>());
        double diff = (actual.to(float64) - expected.to(float64)).abs().max().item<double>();
        Assert.True(diff <= 1e-5 * scale, $"differs by {diff} (scale {scale})");
    }
}
