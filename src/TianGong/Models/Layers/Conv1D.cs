using TorchSharp.Modules;

namespace TianGong.Models.Layers;

/// <summary>
/// GPT-2's "Conv1D": a linear layer whose weight is stored as (in, out), the transpose of nn.Linear.
/// Kept as is so that GPT-2 checkpoints load by name without transposing anything.
/// </summary>
public sealed class Conv1D : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight; // (in, out)
    private readonly Parameter bias;   // (out)

    public Conv1D(long inFeatures, long outFeatures) : base(nameof(Conv1D))
    {
        weight = new Parameter(empty(inFeatures, outFeatures));
        bias = new Parameter(zeros(outFeatures));
        RegisterComponents();
    }

    /// <summary>Around existing parameters: weight (in, out), bias (out).</summary>
    public Conv1D(Parameter weight, Parameter bias) : base(nameof(Conv1D))
    {
        this.weight = weight;
        this.bias = bias;
        RegisterComponents();
    }

    public Parameter Weight => weight;
    public Parameter Bias => bias;

    public override Tensor forward(Tensor x)
    {
        // A decode step's few rows, in eval mode only (see DecodeMatmul on training under no_grad).
        if (!training && DecodeMatmul.TryInOut(x, weight, bias) is { } decoded) return decoded;
        var shape = x.shape; // one query: each .shape is a round trip into libtorch per dimension
        using var flat = x.reshape(-1, shape[^1]);
        using var y = addmm(bias, flat, weight, beta: 1, alpha: 1);
        return y.view([.. shape[..^1], weight.shape[1]]);
    }
}
