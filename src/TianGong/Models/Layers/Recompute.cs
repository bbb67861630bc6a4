using static TorchSharp.torch.autograd;

namespace TianGong.Models.Layers;

/// <summary>
/// Activation recomputation (Chen et al. 2016; Megatron's <c>recompute_granularity</c>): a block's forward runs without
/// keeping its intermediate activations, and backward runs it again to get them. <c>full</c> recomputes each decoder
/// layer (only its input is kept), <c>selective</c> only the attention core (softmax(qkᵀ)v, whose T×T activations grow
/// fastest; Korthikanti et al. 2022). TorchSharp has no torch.utils.checkpoint, so this is a custom autograd function
/// (<see cref="CheckpointFunction"/>) used by <see cref="Checkpoint"/>.
/// </summary>
public enum Recompute
{
    None,
    Selective,
    Full,
}

public static class Recomputation
{
    public static Recompute Parse(string value) => value switch
    {
        "none" => Recompute.None,
        "selective" => Recompute.Selective,
        "full" => Recompute.Full,
        _ => throw new TianGongException($"recompute: expected none, selective or full, got '{value}'"),
    };

    /// <summary>
    /// <paramref name="block"/>(<paramref name="inputs"/>) whose activations are recomputed in backward. Without grad
    /// (evaluation) there is nothing to keep, so the block just runs. Tensors the block reads that need no gradient
    /// (masks, rotary tables) may be captured by the closure; every tensor that needs one must be in <paramref name="inputs"/>,
    /// or be a parameter (parameters get their gradients from the recomputed graph).
    /// </summary>
    public static Tensor Checkpoint(Func<Tensor[], Tensor> block, params Tensor[] inputs)
    {
        if (!is_grad_enabled() || !inputs.Any(t => t.requires_grad)) return block(inputs);
        var args = new object[inputs.Length + 1];
        args[0] = block;
        inputs.CopyTo(args, 1);
        return CheckpointFunction.apply(args);
    }
}

/// <summary>
/// Forward: the block under no_grad (libtorch runs a custom function's forward without grad), keeping only the inputs
/// and the random generator's state. Backward: the generator rewound to that state (dropout draws the same masks), the
/// block run again with grad on detached copies of the inputs, and torch.autograd.backward through it, which accumulates
/// the parameters' gradients as the plain graph would and yields the inputs' gradients (PyTorch's reentrant checkpoint).
/// </summary>
internal sealed class CheckpointFunction : SingleTensorFunction<CheckpointFunction>
{
    public override string Name => "TianGongCheckpoint";

    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var inputs = vars.Skip(1).Cast<Tensor>().ToList();
        ctx.save_data("block", vars[0]);
        ctx.save_data("rng", RandomState.Capture(inputs[0].device));
        ctx.save_for_backward(inputs);
        return ((Func<Tensor[], Tensor>)vars[0])(inputs.ToArray());
    }

    public override List<Tensor> backward(AutogradContext ctx, Tensor gradOutput)
    {
        var block = (Func<Tensor[], Tensor>)ctx.get_data("block");
        var saved = ctx.get_saved_variables();
        var inputs = saved.Select(t => t.detach().requires_grad_(t.requires_grad)).ToArray();
        var state = (RandomState)ctx.get_data("rng");
        using (var _ = enable_grad())
        using (state.Replay())
        {
            var output = block(inputs);
            torch.autograd.backward([output], [gradOutput]);
        }
        return [null!, .. inputs.Select(t => t.requires_grad ? t.grad! : null!)];
    }

    /// <summary>The generator state at the first forward, restored around the recomputation and put back after it.</summary>
    private sealed record RandomState(byte[] Cpu)
    {
        public static RandomState Capture(Device device)
        {
            using var state = get_rng_state();
            return new RandomState(state.data<byte>().ToArray());
        }

        public IDisposable Replay()
        {
            var now = get_rng_state();
            using (var then = tensor(Cpu)) set_rng_state(then);
            return new Restore(now);
        }

        private sealed class Restore(Tensor state) : IDisposable
        {
            public void Dispose()
            {
                set_rng_state(state);
                state.Dispose();
            }
        }
    }
}
