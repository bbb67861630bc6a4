using TianGong.Models.Layers;
using TianGong.Parallelism.Communication;
using TorchSharp.Modules;

namespace TianGong.Parallelism.TensorParallel;

/// <summary>
/// A linear layer whose output features are split over the tensor-parallel ranks (Megatron-Core's ColumnParallelLinear):
/// this rank holds rows of W (and of b) for its own heads or MLP channels. The input enters through
/// <see cref="TensorParallelMappings.CopyToRegion"/>, so backward sums the input gradient over the ranks. The output
/// stays split (the next layer is row-parallel) unless <c>gatherOutput</c>.
/// </summary>
/// <remarks>It keeps the wrapped layer's <c>weight</c>/<c>bias</c> keys, so its state dict names are the Hugging Face ones.</remarks>
public sealed class ColumnParallelLinear : LinearWrapper
{
    private readonly ICommunicator group;
    private readonly bool gatherOutput;

    /// <param name="shard">This rank's shard: out_features is the local width.</param>
    public ColumnParallelLinear(LinearParts shard, ICommunicator group, bool gatherOutput = false) : base(nameof(ColumnParallelLinear), shard)
    {
        this.group = group;
        this.gatherOutput = gatherOutput;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var y = BaseForward(TensorParallelMappings.CopyToRegion(x, group));                  // (B, T, out/tp)
        return (gatherOutput ? TensorParallelMappings.GatherFromRegion(y, group) : y).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// A linear layer whose input features are split over the tensor-parallel ranks (Megatron-Core's RowParallelLinear):
/// this rank multiplies its slice of the input (the column-parallel layer's output) by its columns of W; the partial
/// products are summed by <see cref="TensorParallelMappings.ReduceFromRegion"/> and the bias, held whole on every
/// rank, is added once after the sum.
/// </summary>
public sealed class RowParallelLinear : LinearWrapper
{
    private readonly ICommunicator group;

    /// <param name="shard">This rank's shard: in_features is the local width, the bias is whole.</param>
    public RowParallelLinear(LinearParts shard, ICommunicator group) : base(nameof(RowParallelLinear), shard)
    {
        this.group = group;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var parts = Parts;
        var partial = (parts with { Bias = null }).Apply(x);                                 // (B, T, out): this rank's share
        var y = TensorParallelMappings.ReduceFromRegion(partial, group);
        return (parts.Bias is { } bias ? y + bias : y).MoveToOuterDisposeScope();
    }
}

/// <summary>Builds the shard parts of a linear layer for one rank from the whole layer (Linear or GPT-2's Conv1D).</summary>
internal static class LinearShards
{
    /// <summary>The dimension of the stored weight that holds output features: 0 for Linear (out, in), 1 for Conv1D (in, out).</summary>
    public static int OutputDim(LinearParts p) => p.FanInFanOut ? 1 : 0;

    public static int InputDim(LinearParts p) => p.FanInFanOut ? 0 : 1;

    /// <summary>Output features split (bias split alike); <paramref name="parts"/> = 3 splits each third of a fused q, k, v.</summary>
    public static (LinearParts Shard, ShardLayout Weight, ShardLayout? Bias) Columns(LinearParts whole, int rank, int ranks, int parts = 1)
    {
        var weight = new ShardLayout(OutputDim(whole), whole.OutFeatures, parts);
        var bias = whole.Bias is null ? null : new ShardLayout(0, whole.OutFeatures, parts);
        using var _ = no_grad();
        var w = new Parameter(weight.Slice(whole.Weight, rank, ranks));
        var b = bias is null ? null : new Parameter(bias.Slice(whole.Bias!, rank, ranks));
        return (new LinearParts(whole.InFeatures, w.shape[OutputDim(whole)], w, b, whole.FanInFanOut), weight, bias);
    }

    /// <summary>Input features split; the bias stays whole (added after the sum).</summary>
    public static (LinearParts Shard, ShardLayout Weight) Rows(LinearParts whole, int rank, int ranks)
    {
        var weight = new ShardLayout(InputDim(whole), whole.InFeatures);
        using var _ = no_grad();
        var w = new Parameter(weight.Slice(whole.Weight, rank, ranks));
        var b = whole.Bias is null ? null : new Parameter(whole.Bias.detach().clone());
        return (new LinearParts(w.shape[InputDim(whole)], whole.OutFeatures, w, b, whole.FanInFanOut), weight);
    }
}
