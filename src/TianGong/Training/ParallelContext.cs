using TorchSharp.Modules;

namespace TianGong.Training;

/// <summary>
/// Where the trainer runs and which process of a data-parallel group it is. A single process is rank 0 of 1 and
/// needs no gradient sync; a multi-process group passes its all-reduce as <see cref="SyncGradients"/>, which the
/// trainer calls between backward and the optimizer step (Megatron's finalize_model_grads), so the loop never
/// asks how many processes there are.
/// </summary>
/// <param name="SyncGradients">Averages the gradients of these parameters across ranks; null for one process.</param>
public sealed record ParallelContext(Device Device, int Rank = 0, int WorldSize = 1, Action<IReadOnlyList<Parameter>>? SyncGradients = null)
{
    public static ParallelContext SingleProcess(Device device) => new(device);

    public static ParallelContext Cpu => new(CPU);

    /// <summary>The mean of a per-rank number (the step's loss) over the data-parallel ranks; null for one process.</summary>
    public Func<double, double>? AverageOverRanks { get; init; }

    /// <summary>Builds the optimizer (a sharded one for ZeRO); null: <see cref="AdamW"/> over all parameters.</summary>
    public Func<IReadOnlyList<ParameterGroup>, AdamWOptions, IOptimizer>? CreateOptimizer { get; init; }

    /// <summary>Clips the gradients to a global norm when they are sharded across ranks (ZeRO-2); null: torch's clip_grad_norm_.</summary>
    public Action<IReadOnlyList<Parameter>, double>? ClipGradients { get; init; }

    /// <summary>True on every rank when the flag is true on any (an interruption seen by one rank stops all at the same step); null for one process.</summary>
    public Func<bool, bool>? AnyRank { get; init; }

    /// <summary>
    /// For a model split across ranks (tensor parallelism): entered by every rank around a checkpoint save or load, it
    /// makes the model's state dict the whole one-process one, and on disposal puts what was loaded back into the
    /// shards. Null when every rank holds the whole model.
    /// </summary>
    public Func<IDisposable>? WholeModelState { get; init; }

    /// <summary>The rank whose seed this process's generator takes (default: <see cref="Rank"/>); tensor-parallel ranks of one replica share one.</summary>
    public int? RandomRank { get; init; }

    /// <summary>Rank 0 alone writes metrics, plots and checkpoints and reports progress; the others only train.</summary>
    public bool IsWriter => Rank == 0;

    /// <summary>
    /// Seeds this rank's generator for update <paramref name="step"/> and returns it. TorchSharp's dropout takes no
    /// generator argument and draws from the device's default one, so that default generator is the rank's own
    /// (one per process): reseeding it from (seed, rank, step) makes a resumed run replay dropout exactly, and rank 0
    /// draws what a single process draws while other ranks draw differently.
    /// </summary>
    public Generator SeedStep(long seed, long step)
    {
        long rankSeed = unchecked((seed + (RandomRank ?? Rank) * 1_000_000_007L) * 1_000_003 + step);
        var generator = manual_seed(rankSeed);
        if (Device.type == DeviceType.CUDA) cuda.manual_seed(rankSeed);
        return generator;
    }
}
