using TianGong.Models.Layers;
using TorchSharp.Modules;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Vision;

/// <summary>
/// The MLP that maps backbone features to the space a contrastive loss compares, as SimCLR (Chen et al. 2020, §2.1)
/// and MoCo v2 use: Linear → ReLU → Linear. Thrown away after pretraining: probes and fine-tuning read the backbone.
/// Its two layers come from <see cref="Projections"/>, so adapters and quantization can target them like any projection.
/// </summary>
public sealed class ProjectionHead : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> fc1, fc2;

    public ProjectionHead(long inFeatures, long hiddenFeatures, long outFeatures) : base(nameof(ProjectionHead))
    {
        if (inFeatures <= 0 || hiddenFeatures <= 0 || outFeatures <= 0)
            throw new TianGongException($"projection head: sizes must be positive, got {inFeatures} → {hiddenFeatures} → {outFeatures}");
        fc1 = Projections.Linear(inFeatures, hiddenFeatures);
        fc2 = Projections.Linear(hiddenFeatures, outFeatures);
        RegisterComponents();
    }

    public override Tensor forward(Tensor features)
    {
        using var scope = NewDisposeScope();
        return fc2.forward(F.relu(fc1.forward(features))).MoveToOuterDisposeScope();         // (B, out)
    }
}

public static class ImageFeatures
{
    /// <summary>
    /// One vector per image from a hidden state of either family: a feature map (B, C, h, w) is averaged over space
    /// (ResNet's pooler), a token sequence (B, T, C) gives its first ([CLS]) token.
    /// </summary>
    public static Tensor Pool(Tensor hiddenState) => hiddenState.dim() switch
    {
        4 => hiddenState.mean([2, 3]),
        3 => hiddenState.select(1, 0),
        2 => hiddenState,
        _ => throw new TianGongException($"image features: expected (B, C, h, w) or (B, T, C), got ({string.Join(", ", hiddenState.shape)})"),
    };
}
