using TorchSharp.Modules;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Models.Layers;

/// <summary>
/// nn.LayerNorm over the last dimension (keys <c>weight</c> and <c>bias</c>, initialised to ones and zeros) whose decode
/// steps go through <see cref="DecodeNorms"/>. TorchSharp's LayerNorm is sealed and runs in native code, so the only way
/// to give GPT-2's norms the decode kernel is a module of our own, as DecodeLinear is for nn.Linear.
/// </summary>
public sealed class DecodeLayerNorm : nn.Module<Tensor, Tensor>
{
    // Not readonly: Module.to(dtype/device) replaces parameters through these fields.
    private Parameter weight;
    private Parameter bias;
    private readonly long size;
    private readonly double eps;

    public DecodeLayerNorm(long size, double eps = 1e-5) : base(nameof(DecodeLayerNorm))
    {
        weight = new Parameter(ones(size));
        bias = new Parameter(zeros(size));
        this.size = size;
        this.eps = eps;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) =>
        (training ? null : DecodeNorms.TryLayerNorm(x, weight, bias, eps)) ?? F.layer_norm(x, [size], weight, bias, eps);
}
