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
