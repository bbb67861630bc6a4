using TorchSharp.Modules;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Models.Layers;

/// <summary>
/// What a replacement needs to know of a linear projection, whichever class holds it: TorchSharp's Linear,
/// GPT-2's Conv1D, or a wrapper that itself replaced one.
/// </summary>
/// <param name="Weight">The stored weight: (out, in), or (in, out) when <paramref name="FanInFanOut"/> (Conv1D).</param>
/// <param name="FanInFanOut">PEFT's name for a weight stored transposed, as GPT-2's Conv1D stores it.</param>
public sealed record LinearParts(long InFeatures, long OutFeatures, Parameter Weight, Parameter? Bias, bool FanInFanOut)
{
    /// <summary>
    /// The projection itself, computed exactly as the original class computes it (bit for bit): outside training, a
    /// few rows through <see cref="DecodeMatmul"/> as Conv1D and DecodeLinear do.
    /// </summary>
    public Tensor Apply(Tensor x, bool training = false)
    {
        if (!training && (FanInFanOut ? DecodeMatmul.TryInOut(x, Weight, Bias) : DecodeMatmul.TryOutIn(x, Weight, Bias)) is { } decoded)
            return decoded;
        if (!FanInFanOut) return F.linear(x, Weight, Bias);
        using var scope = NewDisposeScope();
        var flat = x.reshape(-1, x.shape[^1]);
        var y = Bias is null ? flat.matmul(Weight) : addmm(Bias, flat, Weight, beta: 1, alpha: 1);
        return y.view([.. x.shape[..^1], OutFeatures]).MoveToOuterDisposeScope();
    }
}

/// <summary>A module that is a linear projection and can say so (wrappers and replacements implement it).</summary>
public interface ILinearLayer
{
    LinearParts Parts { get; }
}

public static class LinearLayers
{
    /// <summary>The parts of a linear-like module, or null when <paramref name="module"/> is not one.</summary>
    public static LinearParts? Describe(nn.Module module) => module switch
    {
        ILinearLayer layer => layer.Parts,
        Linear linear => new LinearParts(linear.in_features, linear.out_features, linear.weight!, linear.bias, FanInFanOut: false),
        Conv1D conv => new LinearParts(conv.Weight.shape[0], conv.Weight.shape[1], conv.Weight, conv.Bias, FanInFanOut: true),
        _ => null,
    };
}

/// <summary>
/// Base of every layer that stands in for a linear projection: it keeps the original's weight and bias as its own
/// <c>weight</c> and <c>bias</c>, so the state dict keeps the Hugging Face keys (<c>q_proj.weight</c>) and a
/// checkpoint loads and saves as before; whatever the wrapper adds gets keys of its own (<c>q_proj.lora_A.weight</c>).
/// </summary>
public abstract class LinearWrapper : nn.Module<Tensor, Tensor>, ILinearLayer
{
    // Not readonly: Module.to(dtype/device) replaces parameters through these fields.
    private Parameter weight;
    private Parameter? bias;
    private readonly long inFeatures, outFeatures;
    private readonly bool fanInFanOut;

    /// <summary>Subclasses call RegisterComponents() once their own fields exist.</summary>
    protected LinearWrapper(string name, LinearParts original) : base(name)
    {
        (weight, bias) = (original.Weight, original.Bias);
        (inFeatures, outFeatures, fanInFanOut) = (original.InFeatures, original.OutFeatures, original.FanInFanOut);
    }

    /// <summary>The wrapped projection as it is now (after any move to another dtype or device).</summary>
    public LinearParts Parts => new(inFeatures, outFeatures, weight, bias, fanInFanOut);

    /// <summary>The original projection of x.</summary>
    protected Tensor BaseForward(Tensor x) => Parts.Apply(x, training);
}
