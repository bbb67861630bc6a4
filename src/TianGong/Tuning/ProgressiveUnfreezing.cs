using System.Text.RegularExpressions;
using TianGong.Training;
using TorchSharp.Modules;

namespace TianGong.Tuning;

/// <param name="InitialLayers">Decoder layers trainable from step 0, counted from the top.</param>
/// <param name="Every">Steps between unfreezing one more layer downward.</param>
/// <param name="LayerLrDecay">Learning-rate factor per depth (ULMFiT's discriminative rates): the head gets the full rate, the top layer × decay, the one below × decay², ...; 1 turns it off.</param>
public sealed record UnfreezeOptions(int InitialLayers = 1, int Every = 50, double LayerLrDecay = 1.0)
{
    public void Validate(int layers)
    {
        Models.ConfigChecks.InRange("--unfreeze-layers", InitialLayers, 1, layers);
        Models.ConfigChecks.InRange("--unfreeze-every", Every, 1, int.MaxValue);
        Models.ConfigChecks.InRange("--layer-lr-decay", LayerLrDecay, 0, 1, minInclusive: false);
    }
}

/// <summary>
/// Pangu's "dynamic freezing" / ULMFiT's gradual unfreezing: the output side (final norm, LM head) and the top
/// <c>InitialLayers</c> decoder layers train first; every <c>Every</c> steps one more layer below joins; the token
/// embeddings join with the bottom layer. Depth is read from Hugging Face parameter names (<c>model.layers.3.</c>,
/// <c>transformer.h.3.</c>), so every decoder family works unchanged. A tied LM head is the embedding matrix and joins with it.
/// </summary>
public sealed class ProgressiveUnfreezing
{
    private static readonly Regex LayerIndex = new(@"(?:^|\.)(?:layers|h|layer|blocks)\.(\d+)\.", RegexOptions.Compiled);
    private readonly List<(string Name, Parameter Param, int Depth)> parameters;   // depth 0: head side; 1..L: layers top-down; L+1: embeddings
    private readonly UnfreezeOptions options;

    public ProgressiveUnfreezing(nn.Module model, int layers, UnfreezeOptions options)
    {
        options.Validate(layers);
        this.options = options;
        Layers = layers;
        parameters = model.named_parameters().Select(p => (p.name, p.parameter, DepthOf(p.name, layers))).ToList();
    }

    public int Layers { get; }

    /// <summary>How many decoder layers (from the top) train at update <paramref name="step"/>.</summary>
    public int TrainedLayers(long step) => (int)Math.Min(Layers, options.InitialLayers + step / options.Every);

    /// <summary>Whether a parameter at this depth trains at update <paramref name="step"/>.</summary>
    public bool Trains(int depth, long step) => depth <= TrainedLayers(step) || (depth == Layers + 1 && TrainedLayers(step) == Layers);

    /// <summary>Sets requires_grad for update <paramref name="step"/> (frozen parameters get no gradient, so AdamW skips them).</summary>
    public void Apply(long step)
    {
        foreach (var (_, p, depth) in parameters) p.requires_grad = Trains(depth, step);
    }

    /// <summary>The parameter names that train at update <paramref name="step"/>.</summary>
    public IReadOnlyList<string> TrainedAt(long step) => parameters.Where(p => Trains(p.Depth, step)).Select(p => p.Name).ToList();

    /// <summary>
    /// Optimizer groups per depth with their learning-rate factor, decayed and not, over every parameter (all are
    /// made trainable here: the optimizer is built once; <see cref="Apply"/> then freezes what waits).
    /// </summary>
    public IReadOnlyList<ParameterGroup> Groups(nn.Module model, double weightDecay)
    {
        var noDecay = Trainer.NoDecayNames(model);
        foreach (var (_, p, _) in parameters) p.requires_grad = true;
        return parameters.GroupBy(p => p.Depth).OrderBy(g => g.Key).SelectMany(g =>
        {
            double scale = Math.Pow(options.LayerLrDecay, g.Key);
            return new[]
            {
                new ParameterGroup(g.Where(p => !noDecay.Contains(p.Name)).Select(p => (p.Name, p.Param)).ToList(), weightDecay, scale),
                new ParameterGroup(g.Where(p => noDecay.Contains(p.Name)).Select(p => (p.Name, p.Param)).ToList(), 0, scale),
            };
        }).Where(g => g.Parameters.Count > 0).ToList();
    }

    private static int DepthOf(string name, int layers)
    {
        var m = LayerIndex.Match(name);
        if (m.Success) return layers - int.Parse(m.Groups[1].Value);
        bool embedding = name.Contains("embed", StringComparison.Ordinal) || name.Contains(".wte.", StringComparison.Ordinal) || name.Contains(".wpe.", StringComparison.Ordinal);
        return embedding ? layers + 1 : 0;
    }
}
