using TianGong.Models;
using TianGong.Models.Layers;
using TorchSharp.Modules;

namespace TianGong.Parallelism.Pipeline;

/// <summary>
/// One pipeline stage of a causal language model: decoder layers [<see cref="From"/>, <see cref="To"/>), plus the
/// embeddings on the first stage and the final norm and LM head on the last (Megatron's pre_process / post_process).
/// Built from the model's stage API, so no family knows it is split; with one stage it is the whole model, which is
/// how recomputation runs in a single process.
/// </summary>
/// <remarks>
/// Every rank keeps the whole model object (same modules, same state-dict keys, so a checkpoint loads and saves the same
/// way on any layout) but computes and trains only its own parameters. Under pp &gt; 1 the others' tensors are freed
/// (<see cref="PipelineStageModel"/>) and exist again only while a checkpoint is loaded or, on the rank that saves,
/// while <see cref="PipelineParallel.GatherModel"/> copies them in from their owners.
/// </remarks>
public sealed class PipelineStage : IDisposable
{
    private readonly CausalLM lm;
    private readonly Recompute recompute;
    private readonly StageEnds? ends;
    private readonly Dictionary<(long Batch, long Length), AttentionContext> contexts = [];

    /// <param name="ends">The first stage's embedding and the last stage's head when they are not the model's own (tensor parallelism); null: the model's.</param>
    public PipelineStage(CausalLM lm, int stage, int stages, (int From, int To) layers, Recompute recompute = Recompute.None, StageEnds? ends = null)
    {
        this.lm = lm;
        this.recompute = recompute;
        this.ends = ends;
        Index = stage;
        Count = stages;
        (From, To) = layers;
        Parameters = ParametersOf(lm, stage, stages, layers);
        // Parameters both ends use (a head tied to the token embedding): their gradients are summed over the
        // embedding group (first and last stage), as Megatron does, so both copies take the same update.
        var embedding = lm.EmbeddingParameters().ToHashSet(ReferenceEqualityComparer.Instance);
        TiedParameters = lm.HeadParameters().Where(p => embedding.Contains(p)).ToList();
    }

    /// <summary>The parameters stage <paramref name="stage"/> of <paramref name="stages"/> computes with: its layers, the embeddings on the first, the final norm and head on the last.</summary>
    public static IReadOnlyList<Parameter> ParametersOf(CausalLM lm, int stage, int stages, (int From, int To) layers)
    {
        var owned = new List<Parameter>();
        if (stage == 0) owned.AddRange(lm.EmbeddingParameters());
        for (int i = layers.From; i < layers.To; i++) owned.AddRange(lm.LayerParameters(i));
        if (stage == stages - 1) owned.AddRange(lm.HeadParameters());
        return owned.Distinct(ReferenceEqualityComparer.Instance).Cast<Parameter>().ToList();
    }

    public int Index { get; }
    public int Count { get; }
    public int From { get; }
    public int To { get; }
    public bool IsFirst => Index == 0;
    public bool IsLast => Index == Count - 1;

    /// <summary>The parameters this stage computes with and trains, in the model's order of parts.</summary>
    public IReadOnlyList<Parameter> Parameters { get; }

    /// <summary>Parameters the first and last stages share (GPT-2's and Llama's tied head); empty when untied.</summary>
    public IReadOnlyList<Parameter> TiedParameters { get; }

    /// <summary>Hidden states (B, T, C) this stage hands to the next, shaped as its input is.</summary>
    public long[] ActivationShape(long batch, long length) => [batch, length, lm.Config.ModelWidth];

    public ScalarType ActivationType => lm.parameters().First().dtype;

    /// <summary>
    /// The stage's share of the forward call: token ids (B, T) on the first stage, the previous stage's hidden states
    /// (B, T, C) otherwise; returns hidden states (B, T, C), or logits (B, T, V) on the last stage.
    /// </summary>
    public Tensor Forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        long b = input.shape[0], t = input.shape[1];
        if (t > lm.Config.ContextLength)
            throw new TianGongException($"sequence of {t} tokens exceeds the model's context length ({lm.Config.ContextLength})");
        var context = Context(b, t, input.device);
        var x = !IsFirst ? input : ends is { } e ? e.Embed(input, context) : lm.EmbedStage(input, context); // (B, T, C)
        for (int i = From; i < To; i++)
        {
            int layer = i;
            x = recompute == Recompute.Full
                ? Recomputation.Checkpoint(h => lm.LayerStage(layer, h[0], context), x)
                : lm.LayerStage(layer, x, context);
        }
        if (IsLast) x = ends is { } h ? h.Head(lm.NormStage(x)) : lm.LmHead(lm.NormStage(x)); // (B, T, V)
        return x.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// One attention context per batch shape, kept for the stage's life: training calls have no cache and no padding,
    /// so it depends on the shape alone, and a recomputed layer reads it again in backward, after Forward returned.
    /// </summary>
    private AttentionContext Context(long batch, long length, Device device)
    {
        if (contexts.TryGetValue((batch, length), out var context)) return context;
        return contexts[(batch, length)] = AttentionContext.Create(batch, length, device, null, null, null, recomputeCore: recompute == Recompute.Selective);
    }

    public void Dispose()
    {
        foreach (var c in contexts.Values) c.Dispose();
        contexts.Clear();
    }

    /// <summary>
    /// Layer ranges of <paramref name="stages"/> stages: <paramref name="split"/> (layers per stage) when given, else
    /// contiguous ranges that minimise the largest stage's parameter count, the first stage counting the embeddings and
    /// the last the final norm and head.
    /// </summary>
    public static IReadOnlyList<(int From, int To)> Partition(CausalLM lm, int stages, IReadOnlyList<int>? split = null)
    {
        int layers = lm.Config.LayerCount;
        if (stages > layers) throw new TianGongException($"parallel.pp: {stages} stages need at least {stages} decoder layers; the model has {layers}");
        if (split is not null)
        {
            if (split.Count != stages || split.Any(n => n < 1) || split.Sum() != layers)
                throw new TianGongException($"parallel.pp_split: expected {stages} layer counts of at least 1 summing to the model's {layers} layers, got [{string.Join(", ", split)}]");
            var ranges = new List<(int, int)>();
            int start = 0;
            foreach (var n in split) ranges.Add((start, start += n));
            return ranges;
        }
        var cost = Enumerable.Range(0, layers).Select(i => (double)lm.LayerParameters(i).Sum(p => p.numel())).ToArray();
        double embed = lm.EmbeddingParameters().Sum(p => p.numel()), head = lm.HeadParameters().Sum(p => p.numel());
        return BalancedRanges(cost, stages, embed, head);
    }

    /// <summary>Contiguous split of <paramref name="cost"/> into <paramref name="stages"/> ranges minimising the largest stage (dynamic programming over split points).</summary>
    internal static IReadOnlyList<(int From, int To)> BalancedRanges(double[] cost, int stages, double firstExtra, double lastExtra)
    {
        int n = cost.Length;
        var prefix = new double[n + 1];
        for (int i = 0; i < n; i++) prefix[i + 1] = prefix[i] + cost[i];
        double Load(int s, int from, int to) => prefix[to] - prefix[from] + (s == 0 ? firstExtra : 0) + (s == stages - 1 ? lastExtra : 0);
        // best[s, j]: the smallest possible largest load when stages 0..s take layers [0, j).
        var best = new double[stages, n + 1];
        var cut = new int[stages, n + 1];
        for (int s = 0; s < stages; s++)
            for (int j = 0; j <= n; j++)
            {
                best[s, j] = double.PositiveInfinity;
                if (s == 0) { if (j >= 1) best[0, j] = Load(0, 0, j); continue; }
                for (int k = s; k < j; k++)
                {
                    double load = Math.Max(best[s - 1, k], Load(s, k, j));
                    if (load < best[s, j]) (best[s, j], cut[s, j]) = (load, k);
                }
            }
        var ranges = new (int, int)[stages];
        int end = n;
        for (int s = stages - 1; s >= 0; s--)
        {
            int start = s == 0 ? 0 : cut[s, end];
            ranges[s] = (start, end);
            end = start;
        }
        return ranges;
    }
}

/// <summary>
/// A first stage's embedding (token ids (B, T) to hidden states (B, T, C)) and a last stage's head (normed hidden states to
/// logits (B, T, V)) in place of the model's own: under tensor parallelism, the vocabulary-parallel lookup and the
/// gathered vocabulary-parallel projection.
/// </summary>
public sealed record StageEnds(Func<Tensor, AttentionContext, Tensor> Embed, Func<Tensor, Tensor> Head);
