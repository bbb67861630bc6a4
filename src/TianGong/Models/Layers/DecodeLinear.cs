using TorchSharp.Modules;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Models.Layers;

/// <summary>
/// nn.Linear (y = x Wᵀ + b, W (out, in); keys <c>weight</c> and <c>bias</c>; the same initialisation, drawn in the
/// same order) whose decode steps go through <see cref="DecodeMatmul"/>. TorchSharp's Linear is sealed and computes in
/// native code, so the only way to give Llama-family projections the decode kernel is a module of our own.
/// </summary>
public sealed class DecodeLinear : LinearWrapper
{
    /// <summary>A new layer, initialised as nn.Linear: W ~ kaiming_uniform(a = √5), b ~ U(±1/√in).</summary>
    public DecodeLinear(long inFeatures, long outFeatures, bool hasBias = true)
        : base(nameof(DecodeLinear), Initial(inFeatures, outFeatures, hasBias)) => RegisterComponents();

    /// <summary>Around existing parameters: weight (out, in), bias (out) or none.</summary>
    public DecodeLinear(Parameter weight, Parameter? bias)
        : base(nameof(DecodeLinear), new LinearParts(weight.shape[1], weight.shape[0], weight, bias, FanInFanOut: false)) => RegisterComponents();

    public override Tensor forward(Tensor x) => BaseForward(x);

    private static LinearParts Initial(long inFeatures, long outFeatures, bool hasBias)
    {
        // As libtorch's Linear::reset_parameters, so a seed gives the weights nn.Linear would have drawn.
        var weight = new Parameter(empty(outFeatures, inFeatures));
        using (no_grad()) nn.init.kaiming_uniform_(weight, a: Math.Sqrt(5));
        Parameter? bias = null;
        if (hasBias)
        {
            double bound = inFeatures > 0 ? 1 / Math.Sqrt(inFeatures) : 0;
            bias = new Parameter(empty(outFeatures));
            using (no_grad()) nn.init.uniform_(bias, -bound, bound);
        }
        return new LinearParts(inFeatures, outFeatures, weight, bias, FanInFanOut: false);
    }
}
