using System.Text.RegularExpressions;
using TianGong.Models;
using TianGong.Models.Layers;
using TorchSharp.Modules;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Compression.Extraction;

/// <summary>The importance of each attention head (H) and each MLP channel (I) of one decoder layer.</summary>
public sealed record LayerImportance(double[] Heads, double[] Channels);

/// <summary>
/// First-order Taylor importance of heads and MLP channels, measured on calibration text (Michel et al. 2019, "Are
/// Sixteen Heads Really Better than One?"; LLM-Pruner's first-order term). A gate g = 1 is put on every input channel
/// of the projection that follows the unit (o_proj / attention c_proj for heads, down_proj / mlp c_proj for MLP
/// channels); removing a unit sets its gates to 0, so the loss changes by about −Σ ∂L/∂g over its channels. A head's
/// score is |Σ over its D channels of ∂L/∂g|, a channel's |∂L/∂g|, each summed over calibration sequences.
/// </summary>
/// <remarks>
/// Why this and not activation magnitude: the gradient term sees what the layer after the unit does with it. A head
/// whose output projection is zero scores exactly 0 however large its activations, and a unit the loss is insensitive
/// to scores low. It costs one backward pass per sequence, affordable for a calibration set of a few thousand tokens.
/// The gates are put in through <see cref="LayerReplacement"/>, so no family file knows about them.
/// </remarks>
public static partial class ImportanceScores
{
    [GeneratedRegex(@"\.(?:layers|h)\.(?<index>\d+)\.")]
    private static partial Regex LayerIndex();

    /// <summary>
    /// Scores every layer of <paramref name="model"/> (which this call changes: gates are put in; dispose it after).
    /// </summary>
    public static IReadOnlyList<LayerImportance> Measure(CausalLM model, PrunableShape shape, IReadOnlyList<long[]> sequences)
    {
        if (sequences.Count == 0) throw new TianGongException("--calibration: the text gives no sequence of at least 2 tokens");
        foreach (var p in model.parameters()) p.requires_grad = false;
        var gates = new Dictionary<string, ImportanceGate>();
        LayerReplacement.Replace(model, LayerSelector.Regex(shape.GatedProjections), (name, parts) => gates[name] = new ImportanceGate(parts));
        model.eval(); // no dropout: the scores are of the model as it runs

        int layers = shape.Layers;
        var device = model.ModelDevice; // ids and the sums of gradients live beside the weights
        var heads = Enumerable.Range(0, layers).Select(_ => zeros(shape.Heads, dtype: ScalarType.Float64, device: device)).ToArray();
        var channels = Enumerable.Range(0, layers).Select(_ => zeros(shape.Intermediate, dtype: ScalarType.Float64, device: device)).ToArray();
        try
        {
            foreach (var sequence in sequences)
            {
                using var scope = NewDisposeScope();
                var ids = tensor(sequence, device: device).unsqueeze(0);                       // (1, T)
                var logits = model.forward(ids);                                              // (1, T, V)
                var loss = F.cross_entropy(logits[0, ..^1].to(ScalarType.Float32), ids[0, 1..]);
                loss.backward();
                using var _ = no_grad();
                foreach (var (name, gate) in gates)
                {
                    int layer = int.Parse(LayerIndex().Match("." + name).Groups["index"].Value);
                    var grad = gate.Gate.grad!.to(ScalarType.Float64);                         // (in)
                    if (shape.IsHeadGate(name)) heads[layer].add_(grad.view(shape.Heads, shape.HeadDim).sum(1).abs());
                    else channels[layer].add_(grad.abs());
                    gate.Gate.grad!.zero_();
                }
            }
            return Enumerable.Range(0, layers).Select(i => new LayerImportance(heads[i].data<double>().ToArray(), channels[i].data<double>().ToArray())).ToList();
        }
        finally
        {
            foreach (var t in heads.Concat(channels)) t.Dispose();
        }
    }

    /// <summary>
    /// Token sequences for <see cref="Measure"/>: the text tokenized as a whole and cut into pieces of
    /// <paramref name="length"/> tokens, at most <paramref name="max"/> of them (a last shorter piece of 2+ tokens counts).
    /// </summary>
    public static IReadOnlyList<long[]> Sequences(int[] tokens, int length, int max)
    {
        var sequences = new List<long[]>();
        for (int start = 0; start + 1 < tokens.Length && sequences.Count < max; start += length)
            sequences.Add(tokens[start..Math.Min(tokens.Length, start + length)].Select(t => (long)t).ToArray());
        return sequences;
    }

    /// <summary>A linear layer whose input channels pass through gates of value 1: their gradient is the importance signal.</summary>
    private sealed class ImportanceGate : LinearWrapper
    {
        private readonly Parameter gate;

        public ImportanceGate(LinearParts original) : base(nameof(ImportanceGate), original)
        {
            gate = new Parameter(ones(original.InFeatures, dtype: original.Weight.dtype, device: original.Weight.device), requires_grad: true);
            RegisterComponents();
        }

        public Parameter Gate => gate;

        public override Tensor forward(Tensor x)
        {
            using var scope = NewDisposeScope();
            return BaseForward(x * gate).MoveToOuterDisposeScope();
        }
    }
}
