namespace TianGong.Models.Layers;

/// <summary>
/// The one place every family builds its linear projections. Families store the result as a plain
/// <c>nn.Module&lt;Tensor, Tensor&gt;</c>, never as TorchSharp's sealed <c>Linear</c>, so that
/// <see cref="LayerReplacement"/> can put a LoRA, quantized or tensor-parallel layer in its place without the family
/// file knowing.
/// </summary>
public static class Projections
{
    /// <summary>y = x Wᵀ + b with W (out, in), as nn.Linear (and with its default initialisation); decode steps through <see cref="DecodeMatmul"/>.</summary>
    public static nn.Module<Tensor, Tensor> Linear(long inFeatures, long outFeatures, bool bias = true) =>
        new DecodeLinear(inFeatures, outFeatures, bias);

    /// <summary>GPT-2's Conv1D: y = x W + b with W stored as (in, out).</summary>
    public static nn.Module<Tensor, Tensor> Conv1D(long inFeatures, long outFeatures) => new Conv1D(inFeatures, outFeatures);

    /// <summary>A plain layer of the original class around existing parameters: what undoes a wrapper (a merged LoRA).</summary>
    public static nn.Module<Tensor, Tensor> FromParts(LinearParts parts) => parts.FanInFanOut
        ? new Conv1D(parts.Weight, parts.Bias ?? throw new TianGongException("Conv1D layers always have a bias"))
        : new DecodeLinear(parts.Weight, parts.Bias);
}
