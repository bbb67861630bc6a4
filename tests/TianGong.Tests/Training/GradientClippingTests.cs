using TianGong.Training;
using TorchSharp.Modules;

namespace TianGong.Tests.Training;

/// <summary>
/// <see cref="GradientClipping.ScaleOnDevice"/>, the GPU's clipping (no read of the norm on the host), against libtorch's
/// clip_grad_norm_ on copies of the same gradients. The arithmetic is device-independent, so it is checked on the CPU.
/// </summary>
public class GradientClippingTests
{
    private static Parameter[] WithGradients(ulong seed, float scale)
    {
        var generator = new Generator(seed);
        long[][] shapes = [[7, 5], [5], [3, 4, 2], [1]];
        return shapes.Select(shape =>
        {
            var p = new Parameter(randn(shape, generator: generator));
            p.grad = randn(shape, generator: generator) * scale;
            return p;
        }).ToArray();
    }

    [Theory]
    [InlineData(0.5f, 1.0)]   // the norm is far above 1: every gradient is scaled down
    [InlineData(0.01f, 1.0)]  // the norm is below 1: the gradients stay as they are (coefficient clamped at 1)
    [InlineData(3f, 0.25)]
    public void Scales_as_libtorchs_clip_grad_norm(float scale, double maxNorm)
    {
        using var scope = NewDisposeScope();
        var reference = WithGradients(5, scale);
        var onDevice = WithGradients(5, scale);
        var before = onDevice.Select(p => p.grad!.clone()).ToArray();
        nn.utils.clip_grad_norm_(reference, maxNorm);
        GradientClipping.ScaleOnDevice(onDevice.Select(p => p.grad!).ToList(), maxNorm);
        for (int i = 0; i < reference.Length; i++)
            Assert.True(onDevice[i].grad!.allclose(reference[i].grad!, rtol: 1e-6, atol: 1e-7), $"gradient {i}");
        double norm = sqrt(stack(onDevice.Select(p => p.grad!.square().sum()).ToArray()).sum()).item<float>();
        double normBefore = sqrt(stack(before.Select(g => g.square().sum()).ToArray()).sum()).item<float>();
        if (normBefore > maxNorm) Assert.Equal(maxNorm, norm, 4);
        else for (int i = 0; i < before.Length; i++) Assert.True(onDevice[i].grad!.eq(before[i]).all().item<bool>(), $"gradient {i} changed below the limit");
    }

    [Fact]
    public void Clips_bfloat16_gradients_in_their_dtype()
    {
        using var scope = NewDisposeScope();
        var grads = WithGradients(9, 2f).Select(p => p.grad!.to(ScalarType.BFloat16)).ToList();
        GradientClipping.ScaleOnDevice(grads, 1.0);
        Assert.All(grads, g => Assert.Equal(ScalarType.BFloat16, g.dtype));
        double norm = sqrt(stack(grads.Select(g => g.to(ScalarType.Float32).square().sum()).ToArray()).sum()).item<float>();
        Assert.InRange(norm, 0.98, 1.02); // bf16's 8-bit mantissa
    }
}
