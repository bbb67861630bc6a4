using TianGong.Parallelism.Communication;
using TianGong.Training;
using TorchSharp.Modules;

namespace TianGong.Parallelism.TensorParallel;

/// <summary>
/// The optimizer of a tensor-parallel rank: any optimizer over this rank's shards (AdamW, or ZeRO over the data-parallel
/// group) whose saved state is made layout-independent, as ZeRO's is: <see cref="StateDict"/> gathers each split
/// moment into the whole tensor of the one-process parameter (keys "{param}.exp_avg" as <see cref="AdamW"/> names them),
/// and <see cref="LoadStateDict"/> takes this rank's slice of a whole state saved by any layout. The update itself is
/// element-wise, so each rank updating its shards is exactly the one-process update.
/// </summary>
public sealed class TensorParallelOptimizer(IOptimizer inner, IReadOnlyDictionary<string, ShardLayout> layouts, ICommunicator group) : IOptimizer
{
    private static readonly string[] Suffixes = [".exp_avg_sq", ".exp_avg", ".master"];

    public IOptimizer Inner => inner;

    public IEnumerable<Parameter> Parameters => inner.Parameters;

    public long StepCount => inner.StepCount;

    public void Step(double lr) => inner.Step(lr);

    public void ZeroGrad() => inner.ZeroGrad();

    /// <summary>Collective over the tensor-parallel group (and the inner optimizer's group): the whole, one-process state.</summary>
    public Dictionary<string, Tensor> StateDict()
    {
        using var _ = no_grad();
        var state = new Dictionary<string, Tensor>();
        foreach (var (key, t) in inner.StateDict())
            state[key] = LayoutOf(key) is { } layout ? layout.Gather(t, group) : t;
        return state;
    }

    /// <summary>This rank's slices of a whole state (saved by one process or any layout).</summary>
    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state, long stepCount, string source)
    {
        using var _ = no_grad();
        var mine = new Dictionary<string, Tensor>();
        var sliced = new List<Tensor>();
        try
        {
            foreach (var (key, t) in state)
            {
                if (LayoutOf(key) is not { } layout)
                {
                    mine[key] = t;
                    continue;
                }
                if (t.dim() <= layout.Dim || t.shape[layout.Dim] != layout.FullSize)
                    throw new TianGongException($"{source}: optimizer tensor '{key}' has shape [{string.Join(", ", t.shape)}], the model needs {layout.FullSize} rows along dimension {layout.Dim}");
                var slice = layout.Slice(t, group.Rank, group.Size);
                sliced.Add(slice);
                mine[key] = slice;
            }
            inner.LoadStateDict(mine, stepCount, source);
        }
        finally
        {
            foreach (var t in sliced) t.Dispose();
        }
    }

    private ShardLayout? LayoutOf(string key)
    {
        foreach (var suffix in Suffixes)
            if (key.EndsWith(suffix, StringComparison.Ordinal))
                return layouts.GetValueOrDefault(key[..^suffix.Length]);
        return null;
    }

    public void Dispose() => inner.Dispose();
}

/// <summary>Gradient clipping when parameters are split over the tensor-parallel ranks.</summary>
public static class TensorParallelClipping
{
    /// <summary>
    /// Scales the gradients to a global norm of at most <paramref name="maxNorm"/>, as torch's clip_grad_norm_ on one
    /// process: the squares of split parameters' gradients are summed over the group, those of whole (replicated)
    /// parameters counted once (they are equal on every rank).
    /// </summary>
    /// <param name="countedElsewhere">Under pipeline parallelism: parameters another stage counts (a tied head on the last stage); null: none.</param>
    /// <param name="stages">Under pipeline parallelism: the pipeline group, over which the stages' sums of squares add up.</param>
    public static void ClipGradients(IReadOnlyList<Parameter> trained, double maxNorm, ISet<Parameter> split, ICommunicator group,
        IReadOnlyList<Parameter>? countedElsewhere = null, ICommunicator? stages = null)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var splitSquares = zeros(1, ScalarType.Float64);
        var wholeSquares = zeros(1, ScalarType.Float64);
        var skip = countedElsewhere?.ToHashSet(ReferenceEqualityComparer.Instance) ?? [];
        foreach (var p in trained)
        {
            if (p.grad is not { } g || skip.Contains(p)) continue;
            var squares = g.to(ScalarType.Float64).square().sum().reshape(1);
            if (split.Contains(p)) splitSquares.add_(squares);
            else wholeSquares.add_(squares);
        }
        group.AllReduce(splitSquares);
        var total = splitSquares + wholeSquares;
        stages?.AllReduce(total);
        double norm = Math.Sqrt(total.item<double>());
        double coefficient = maxNorm / (norm + 1e-6); // as torch.nn.utils.clip_grad_norm_
        if (coefficient >= 1) return;
        foreach (var p in trained) p.grad?.mul_(coefficient);
    }
}
