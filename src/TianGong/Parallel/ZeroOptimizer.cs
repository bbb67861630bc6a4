using TianGong.Parallelism.Communication;
using TianGong.Training;
using TorchSharp.Modules;

namespace TianGong.Parallelism;

/// <summary>
/// AdamW with its state sharded over the data-parallel ranks (ZeRO, Rajbhandari et al. 2020). The trained parameters
/// are laid end to end in one flat fp32 vector, padded to a multiple of dp; rank r owns elements [r·S, (r+1)·S) and keeps
/// both moments (and, for bf16 weights, the fp32 master copy) of that slice only, so optimizer memory per rank is
/// 1/dp of <see cref="AdamW"/>'s. After its update each rank all-gathers the slices into the parameters.
/// Stage 1 takes the all-reduced gradients; stage 2 reduce-scatters them instead (<see cref="ReduceScatterGradients"/>),
/// so each rank receives only its slice's sum and the gradient norm for clipping is summed over the slices.
/// </summary>
/// <remarks>
/// TorchSharp's autograd still fills every parameter's .grad during backward, so stage 2 here halves the gradient
/// traffic (reduce-scatter instead of all-reduce) and keeps only the slice of the averaged gradient, but does not free
/// the local full gradients as DeepSpeed does with its backward hooks.
/// </remarks>
public sealed class ZeroOptimizer : IOptimizer
{
    private sealed record Entry(string Name, Parameter Param, long Offset, long Count, double WeightDecay);

    private readonly ICommunicator group;
    private readonly AdamWOptions options;
    private readonly List<Entry> entries = [];
    private readonly long total, shardSize, shardStart;
    private readonly Device device;           // the parameters' device: the slices live beside them (NCCL moves GPU tensors in place)
    private readonly Tensor expAvg, expAvgSq; // (S,) fp32: this rank's slice
    private readonly Tensor? master; // (S,) fp32 master weights when the model is not fp32, as AdamW keeps them
    private Tensor? reducedGradient; // stage 2: this rank's slice of the averaged gradient, from the last sync

    public ZeroOptimizer(IReadOnlyList<ParameterGroup> groups, AdamWOptions options, ICommunicator dataParallel, int stage)
    {
        if (stage is not (1 or 2)) throw new ArgumentOutOfRangeException(nameof(stage), stage, "ZeRO stage must be 1 or 2");
        Stage = stage;
        group = dataParallel;
        this.options = options;
        var seen = new HashSet<string>();
        foreach (var g in groups)
            foreach (var (name, p) in g.Parameters)
            {
                if (!seen.Add(name)) throw new ArgumentException($"parameter '{name}' is in more than one group", nameof(groups));
                if (!p.requires_grad) throw new ArgumentException($"parameter '{name}' is frozen (requires_grad is false) but in an optimizer group", nameof(groups));
                entries.Add(new Entry(name, p, total, p.numel(), g.WeightDecay ?? options.WeightDecay));
                total += p.numel();
            }
        shardSize = (total + group.Size - 1) / group.Size;
        device = entries.Count > 0 ? entries[0].Param.device : CPU;
        if (entries.FirstOrDefault(e => e.Param.device_type != device.type || e.Param.device_index != device.index) is { } other)
            throw new ArgumentException($"parameter '{other.Name}' is on {other.Param.device}, the others on {device}: ZeRO shards one device's parameters", nameof(groups));
        shardStart = group.Rank * shardSize;

        using var _ = no_grad();
        using (NewDisposeScope())
        {
            if (entries.Any(e => e.Param.dtype != ScalarType.Float32))
                master = ShardOf(e => e.Param.detach()).DetachFromDisposeScope();
            expAvg = zeros(shardSize, ScalarType.Float32, device).DetachFromDisposeScope();
            expAvgSq = zeros(shardSize, ScalarType.Float32, device).DetachFromDisposeScope();
        }
    }

    public int Stage { get; }

    public long StepCount { get; private set; }

    public IEnumerable<Parameter> Parameters => entries.Select(e => e.Param);

    /// <summary>Bytes of optimizer state this rank holds (two moments, and masters for bf16 weights), for the memory benchmark.</summary>
    public long StateBytes => (master is null ? 2 : 3) * shardSize * sizeof(float);

    private long Padding => shardSize * group.Size - total;

    /// <summary>
    /// Stage 2's gradient sync (used instead of the data-parallel all-reduce): one reduce-scatter of all gradients, which
    /// leaves this rank the mean gradient of its slice.
    /// </summary>
    public void ReduceScatterGradients(IReadOnlyList<Parameter> _)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var slice = empty(shardSize, ScalarType.Float32, device);
        group.ReduceScatter(cat(entries.Select(e => Gradient(e).reshape(-1)).Append(zeros(Padding, ScalarType.Float32, device)).ToList()), slice);
        slice.div_(group.Size);
        reducedGradient?.Dispose();
        reducedGradient = slice.DetachFromDisposeScope();
    }

    /// <summary>Stage 2's clipping: the global norm from each rank's slice (sum of squares all-reduced), then the slice scaled as clip_grad_norm_ would.</summary>
    /// <param name="countedElsewhere">Under pipeline parallelism: parameters another stage counts in the norm (a tied head on the last stage); null: none.</param>
    /// <param name="stages">Under pipeline parallelism: the pipeline group, over which the stages' sums of squares add up to the whole model's.</param>
    public void ClipGradients(IReadOnlyList<Parameter> _, double maxNorm, IReadOnlyList<Parameter>? countedElsewhere = null, ICommunicator? stages = null)
    {
        var g = reducedGradient ?? throw new InvalidOperationException("ZeRO-2: clip before the gradients were reduce-scattered");
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var skip = countedElsewhere?.ToHashSet(ReferenceEqualityComparer.Instance) ?? [];
        var counted = skip.Count == 0 ? g : g * ShardOf(e => skip.Contains(e.Param) ? zeros(e.Count, device: device) : ones(e.Count, device: device));
        GlobalNormClipping.Scale(counted.square().sum(), maxNorm, [g], group, stages);
    }

    public void Step(double lr)
    {
        StepCount++;
        double bc1 = 1 - Math.Pow(options.Beta1, StepCount);
        double bc2 = 1 - Math.Pow(options.Beta2, StepCount);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var g = Stage == 2
            ? reducedGradient ?? throw new InvalidOperationException("ZeRO-2: step before the gradients were reduce-scattered")
            : ShardOf(Gradient);
        var w = master ?? ShardOf(e => e.Param.detach()); // fp32 weights: the slice is read from the parameters each step
        // AdamW.Step's update on this rank's slice (weight decay as AdamW computes its factor, per parameter).
        using (var decay = ShardOf(e => full(e.Count, (float)(1 - lr * e.WeightDecay), ScalarType.Float32, device)))
            w.mul_(decay);
        Training.AdamW.Update(w, g, expAvg, expAvgSq, lr, options, bc1, bc2);

        var whole = empty(shardSize * group.Size, ScalarType.Float32, device);
        group.AllGather(w, whole);
        foreach (var e in entries)
            e.Param.copy_(whole.narrow(0, e.Offset, e.Count).view_as(e.Param));
    }

    public void ZeroGrad()
    {
        foreach (var e in entries) e.Param.grad?.zero_();
        reducedGradient?.Dispose();
        reducedGradient = null;
    }

    /// <summary>Collective: all ranks gather the moments; the result is keyed as <see cref="AdamW.StateDict"/>'s, so any layout can load it.</summary>
    public Dictionary<string, Tensor> StateDict()
    {
        var state = new Dictionary<string, Tensor>();
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        foreach (var (suffix, slice) in new[] { (".exp_avg", expAvg), (".exp_avg_sq", expAvgSq), (".master", master) })
        {
            if (slice is null) continue; // AdamW keeps masters for bf16 weights only
            using var whole = empty(shardSize * group.Size, ScalarType.Float32, device);
            group.AllGather(slice, whole);
            foreach (var e in entries)
                if (suffix != ".master" || e.Param.dtype != ScalarType.Float32)
                    state[e.Name + suffix] = whole.narrow(0, e.Offset, e.Count).reshape(e.Param.shape).clone().DetachFromDisposeScope();
        }
        return state;
    }

    /// <summary>Takes this rank's slice of a whole state (as saved by <see cref="AdamW"/> or by this optimizer on any dp).</summary>
    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state, long stepCount, string source)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        Tensor Whole(string suffix, Func<Entry, Tensor>? fallback = null) =>
            cat(entries.Select(e => state.TryGetValue(e.Name + suffix, out var t)
                    ? (t.numel() == e.Count ? t.to(ScalarType.Float32, device).reshape(-1)
                        : throw new TianGongException($"{source}: optimizer tensor '{e.Name}{suffix}' has {t.numel()} elements, expected {e.Count}"))
                    : fallback?.Invoke(e) ?? throw new TianGongException($"{source}: missing optimizer tensor '{e.Name}{suffix}'"))
                .Append(zeros(Padding, ScalarType.Float32, device)).ToList());
        expAvg.copy_(Whole(".exp_avg").narrow(0, shardStart, shardSize));
        expAvgSq.copy_(Whole(".exp_avg_sq").narrow(0, shardStart, shardSize));
        master?.copy_(Whole(".master", e => e.Param.detach().to(ScalarType.Float32).reshape(-1)).narrow(0, shardStart, shardSize));
        StepCount = stepCount;
    }

    /// <summary>This rank's slice of the flat vector made of <paramref name="of"/>(each parameter): only the overlapping pieces are read (S elements, fp32).</summary>
    private Tensor ShardOf(Func<Entry, Tensor> of)
    {
        long end = shardStart + shardSize;
        var pieces = new List<Tensor>();
        foreach (var e in entries)
        {
            long from = Math.Max(e.Offset, shardStart), to = Math.Min(e.Offset + e.Count, end);
            if (from < to) pieces.Add(of(e).reshape(-1).narrow(0, from - e.Offset, to - from).to(ScalarType.Float32));
        }
        long covered = pieces.Sum(p => p.numel());
        if (covered < shardSize) pieces.Add(zeros(shardSize - covered, ScalarType.Float32, device)); // the padding after the last parameter
        return cat(pieces);
    }

    private Tensor Gradient(Entry e) => e.Param.grad is { } g ? g.to(ScalarType.Float32) : zeros(e.Param.shape, ScalarType.Float32, device);

    public void Dispose()
    {
        master?.Dispose();
        expAvg.Dispose();
        expAvgSq.Dispose();
        reducedGradient?.Dispose();
    }
}
