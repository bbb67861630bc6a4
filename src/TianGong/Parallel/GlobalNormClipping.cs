using TianGong.Parallelism.Communication;
using TorchSharp.Modules;

namespace TianGong.Parallelism;

/// <summary>
/// torch.nn.utils.clip_grad_norm_ when the model's gradients are spread over ranks (pipeline stages, tensor-parallel
/// shards, ZeRO-2 slices): each rank sums the squares of the gradients it holds (in fp64), the sums are all-reduced over
/// the groups that split the model, and every rank scales its gradients by the same factor, maxNorm / (norm + 1e-6) when
/// that is below 1, so all ranks clip exactly as one process would.
/// </summary>
public static class GlobalNormClipping
{
    /// <summary>Each rank holds whole gradients of its own parameters (pipeline stages): their squares summed over <paramref name="sumOver"/>.</summary>
    /// <param name="countedElsewhere">Parameters another rank counts in the norm (a tied head on the last stage, counted on the first); null: none.</param>
    public static void Clip(IReadOnlyList<Parameter> trained, double maxNorm, IReadOnlyList<Parameter>? countedElsewhere, params ICommunicator?[] sumOver)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        Scale(SumOfSquares(Counted(trained, countedElsewhere)), maxNorm, trained.Select(p => p.grad), sumOver);
    }

    /// <summary>
    /// Parameters split over the tensor-parallel ranks: the squares of split parameters' gradients are summed over
    /// <paramref name="tensorParallel"/>, those of whole (replicated) parameters counted once (they are equal on every rank).
    /// </summary>
    /// <param name="countedElsewhere">Under pipeline parallelism: parameters another stage counts (a tied head on the last stage); null: none.</param>
    /// <param name="stages">Under pipeline parallelism: the pipeline group, over which the stages' sums of squares add up.</param>
    public static void ClipTensorParallel(IReadOnlyList<Parameter> trained, double maxNorm, ISet<Parameter> split, ICommunicator tensorParallel,
        IReadOnlyList<Parameter>? countedElsewhere = null, ICommunicator? stages = null)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var counted = Counted(trained, countedElsewhere).ToList();
        var splitSquares = SumOfSquares(counted.Where(split.Contains));
        tensorParallel.AllReduce(splitSquares);
        Scale(splitSquares + SumOfSquares(counted.Where(p => !split.Contains(p))), maxNorm, trained.Select(p => p.grad), stages);
    }

    /// <summary>
    /// The common end: this rank's sum of squares (one element) summed over each of <paramref name="sumOver"/> in turn
    /// (null entries skipped), then <paramref name="gradients"/> scaled in place when the global norm exceeds <paramref name="maxNorm"/>.
    /// </summary>
    public static void Scale(Tensor squares, double maxNorm, IEnumerable<Tensor?> gradients, params ICommunicator?[] sumOver)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        // On the host: every rank reduces the same kind of tensor (a rank without gradients has a CPU zero).
        var total = squares.to(ScalarType.Float64).cpu().reshape(1).contiguous();
        foreach (var group in sumOver) group?.AllReduce(total);
        double coefficient = maxNorm / (Math.Sqrt(total.item<double>()) + 1e-6); // as torch.nn.utils.clip_grad_norm_
        if (coefficient >= 1) return;
        foreach (var g in gradients) g?.mul_(coefficient);
    }

    /// <summary>The sum of the squares of the parameters' gradients, in fp64, as a one-element CPU tensor (in the caller's dispose scope).</summary>
    private static Tensor SumOfSquares(IEnumerable<Parameter> parameters)
    {
        Tensor? total = null;
        foreach (var p in parameters)
            if (p.grad is { } g)
            {
                var squares = g.to(ScalarType.Float64).square().sum().reshape(1);
                total = total is null ? squares : total.add_(squares);
            }
        return total?.cpu() ?? zeros(1, ScalarType.Float64);
    }

    private static IEnumerable<Parameter> Counted(IReadOnlyList<Parameter> trained, IReadOnlyList<Parameter>? countedElsewhere)
    {
        if (countedElsewhere is not { Count: > 0 }) return trained;
        var skip = countedElsewhere.ToHashSet(ReferenceEqualityComparer.Instance);
        return trained.Where(p => !skip.Contains(p));
    }
}
