using TianGong.Models.Layers;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Tests.Models;

/// <summary>
/// <see cref="Attention.OneQuery"/>, the GPU decode step's attention, against libtorch's scaled_dot_product_attention
/// on the same inputs. The function is device-independent, so its numbers are checked here on the CPU.
/// </summary>
public class OneQueryAttentionTests
{
    [Theory]
    [InlineData(1, 4, 1, 16)]
    [InlineData(3, 2, 37, 8)]
    [InlineData(16, 8, 130, 64)]
    public void Matches_libtorch_attention_without_a_mask(int batch, int heads, int keys, int dim)
    {
        using var scope = NewDisposeScope();
        var generator = new Generator(7);
        var q = randn([batch, heads, 1, dim], generator: generator);
        var k = randn([batch, heads, keys, dim], generator: generator);
        var v = randn([batch, heads, keys, dim], generator: generator);
        var expected = F.scaled_dot_product_attention(q, k, v);
        var actual = Attention.OneQuery(q, k, v, null);
        Assert.Equal(expected.shape, actual.shape);
        Assert.True(actual.allclose(expected, rtol: 1e-5, atol: 1e-6), $"max |diff| {(actual - expected).abs().max().item<float>()}");
    }

    [Fact]
    public void Matches_libtorch_attention_under_a_per_row_mask()
    {
        using var scope = NewDisposeScope();
        var generator = new Generator(11);
        var (batch, heads, keys, dim) = (4, 2, 20, 16);
        var q = randn([batch, heads, 1, dim], generator: generator);
        var k = randn([batch, heads, keys, dim], generator: generator);
        var v = randn([batch, heads, keys, dim], generator: generator);
        // Row b sees its first 5b + 3 keys, as a per-row cache's rows of different lengths do.
        var lengths = tensor(new long[] { 3, 8, 13, 18 }).view(batch, 1, 1, 1);
        var mask = arange(keys, dtype: ScalarType.Int64).view(1, 1, 1, keys) < lengths;
        var expected = F.scaled_dot_product_attention(q, k, v, mask);
        var actual = Attention.OneQuery(q, k, v, mask);
        Assert.True(actual.allclose(expected, rtol: 1e-5, atol: 1e-6), $"max |diff| {(actual - expected).abs().max().item<float>()}");
        // The masked keys take no part: changing them leaves the output as it was.
        var changed = Attention.OneQuery(q, k.masked_fill(mask.logical_not().transpose(-2, -1), 1e4), v.masked_fill(mask.logical_not().transpose(-2, -1), 1e4), mask);
        Assert.True(changed.allclose(actual, rtol: 1e-6, atol: 1e-6));
    }

    [Fact]
    public void Keeps_bfloat16_inputs_in_bfloat16_within_their_precision()
    {
        using var scope = NewDisposeScope();
        var generator = new Generator(3);
        var q = randn([2, 4, 1, 32], generator: generator);
        var k = randn([2, 4, 50, 32], generator: generator);
        var v = randn([2, 4, 50, 32], generator: generator);
        var reference = F.scaled_dot_product_attention(q, k, v);
        var actual = Attention.OneQuery(q.to(ScalarType.BFloat16), k.to(ScalarType.BFloat16), v.to(ScalarType.BFloat16), null);
        Assert.Equal(ScalarType.BFloat16, actual.dtype);
        double relative = ((actual.to(ScalarType.Float32) - reference).norm() / reference.norm()).item<float>();
        Assert.InRange(relative, 0, 1e-2); // bf16 operands: between 1e-3 and 1e-2 of the fp32 result
    }
}
