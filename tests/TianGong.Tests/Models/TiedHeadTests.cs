using TianGong.Models.Layers;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Tests.Models;

public class TiedHeadTests
{
    [Theory]
    [InlineData(1, 1)]
    [InlineData(16, 1)]  // a decode step of 16 sequences: the decode kernel
    [InlineData(64, 1)]
    [InlineData(80, 1)]  // past DecodeMatmul.MaxRows: the plain product
    [InlineData(3, 7)]   // a short prompt: the decode kernel
    [InlineData(5, 20)]  // a longer prompt: the plain product
    public void Inference_logits_equal_the_plain_linear_product(int batch, int length)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        manual_seed(3);
        var weight = randn(300, 48) * 0.1;
        var hidden = randn(batch, length, 48);
        var logits = TiedHead.Logits(hidden, weight);
        Assert.Equal(new long[] { batch, length, 300 }, logits.shape);
        Assert.True(logits.is_contiguous());
        double diff = (logits - F.linear(hidden, weight)).abs().max().item<float>();
        Assert.True(diff < 1e-5, $"differs by {diff}");
    }

    [Fact]
    public void Under_autograd_gradients_reach_the_weight_as_through_linear()
    {
        using var scope = NewDisposeScope();
        manual_seed(4);
        var weight = (randn(50, 8) * 0.1).requires_grad_();
        var hidden = randn(2, 1, 8);
        TiedHead.Logits(hidden, weight).square().sum().backward();
        var viaHead = weight.grad!.clone();
        weight.grad!.zero_();
        F.linear(hidden, weight).square().sum().backward();
        Assert.True(allclose(viaHead, weight.grad!, rtol: 1e-5, atol: 1e-6));
    }
}
