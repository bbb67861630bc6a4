using TorchSharp.Modules;

namespace TianGong.Models.Layers;

/// <summary>
/// Root-mean-square norm as in Llama (TorchSharp 0.107 has none). Computes in fp32 whatever the input dtype, as HF does.
/// Outside training, a few fp32 rows (decode steps) go through <see cref="DecodeNorms"/>: one pass instead of five
/// libtorch ops.
/// </summary>
public sealed class RMSNorm : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight;
    private readonly double eps;

    public RMSNorm(long size, double eps) : base(nameof(RMSNorm))
    {
        weight = new Parameter(ones(size));
        this.eps = eps;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        if (!training && DecodeNorms.TryRmsNorm(x, weight, eps) is { } decoded) return decoded;
        using var scope = NewDisposeScope();
        var x32 = x.to(ScalarType.Float32);
        var normed = x32 * rsqrt(x32.pow(2).mean([-1L], keepdim: true) + eps);
        return (weight * normed.to(x.dtype)).MoveToOuterDisposeScope();
    }
}
