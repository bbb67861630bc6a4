using TianGong.Parallelism.Communication;
using static TorchSharp.torch.autograd;

namespace TianGong.Parallelism.TensorParallel;

/// <summary>
/// The collectives of tensor parallelism as autograd functions, as Megatron-Core's tensor_parallel/mappings.py defines
/// them: each is one collective in forward and its adjoint in backward, so a parallel layer is an ordinary module
/// whose gradients come out right without the trainer knowing.
/// </summary>
public static class TensorParallelMappings
{
    /// <summary>Identity forward, all-reduce (sum) of the gradient backward: enters a region where each rank computes a part from the same input.</summary>
    public static Tensor CopyToRegion(Tensor x, ICommunicator group) => group.Size == 1 ? x : CopyFunction.apply(x, group);

    /// <summary>All-reduce (sum) forward, identity backward: leaves a region whose ranks hold partial sums.</summary>
    public static Tensor ReduceFromRegion(Tensor x, ICommunicator group) => group.Size == 1 ? x : ReduceFunction.apply(x, group);

    /// <summary>All-gather along the last dimension forward, this rank's slice of the gradient backward.</summary>
    public static Tensor GatherFromRegion(Tensor x, ICommunicator group) => group.Size == 1 ? x : GatherFunction.apply(x, group);

    /// <summary>The all-reduce of <paramref name="t"/> over the group, as a new tensor on t's device (the communicator works in place on a contiguous CPU copy).</summary>
    internal static Tensor AllReduced(Tensor t, ICommunicator group, ReduceOp op = ReduceOp.Sum)
    {
        var buffer = t.detach().to(CPU).contiguous().clone();
        group.AllReduce(buffer, op);
        return buffer.to(t.device);
    }

    /// <summary>Every rank's <paramref name="t"/> concatenated along the last dimension, in rank order.</summary>
    internal static Tensor AllGatheredLastDim(Tensor t, ICommunicator group)
    {
        using var scope = NewDisposeScope();
        // The communicator concatenates along the first dimension: gather (Size, ..., n) and move the rank axis next to the last.
        var local = t.detach().to(CPU).contiguous();
        var whole = empty([group.Size, .. local.shape], local.dtype);
        group.AllGather(local, whole);
        var rankLast = whole.movedim([0], [-2]);                                                 // (..., Size, n)
        return rankLast.reshape([.. local.shape[..^1], group.Size * local.shape[^1]]).to(t.device).MoveToOuterDisposeScope();
    }

    private sealed class CopyFunction : SingleTensorFunction<CopyFunction>
    {
        public override string Name => "TensorParallelCopyToRegion";

        public override Tensor forward(AutogradContext ctx, params object[] vars)
        {
            ctx.save_data("group", vars[1]);
            return ((Tensor)vars[0]).clone();
        }

        public override List<Tensor> backward(AutogradContext ctx, Tensor gradOutput) =>
            [AllReduced(gradOutput, (ICommunicator)ctx.get_data("group")), null!];
    }

    private sealed class ReduceFunction : SingleTensorFunction<ReduceFunction>
    {
        public override string Name => "TensorParallelReduceFromRegion";

        public override Tensor forward(AutogradContext ctx, params object[] vars) => AllReduced((Tensor)vars[0], (ICommunicator)vars[1]);

        public override List<Tensor> backward(AutogradContext ctx, Tensor gradOutput) => [gradOutput.clone(), null!];
    }

    private sealed class GatherFunction : SingleTensorFunction<GatherFunction>
    {
        public override string Name => "TensorParallelGatherFromRegion";

        public override Tensor forward(AutogradContext ctx, params object[] vars)
        {
            var group = (ICommunicator)vars[1];
            ctx.save_data("group", group);
            return AllGatheredLastDim((Tensor)vars[0], group);
        }

        public override List<Tensor> backward(AutogradContext ctx, Tensor gradOutput)
        {
            var group = (ICommunicator)ctx.get_data("group");
            long width = gradOutput.shape[^1] / group.Size;
            return [gradOutput.narrow(-1, group.Rank * width, width).contiguous(), null!];
        }
    }
}
