namespace TianGong.Parallelism.Pipeline;

/// <summary>
/// What a schedule calls for each micro-batch on each stage: the stage's input (token ids on the first stage, the
/// received hidden states elsewhere) to its output, which on the last stage is the micro-batch's mean loss. The
/// training program writes it (next-token loss for pretraining); the schedule never knows what the model is.
/// </summary>
public delegate Tensor PipelineForwardStep<TBatch>(PipelineStage stage, Tensor input, TBatch microBatch);

/// <summary>One micro-batch as a schedule sees it: the first stage's input, its activation shape, and the batch the forward step gets.</summary>
public sealed record MicroBatch<TBatch>(TBatch Batch, Tensor Input, long[] ActivationShape);

/// <summary>
/// Forward and backward of one step over its micro-batches on one stage; returns the sum of the micro-batch losses on the
/// last stage (0 elsewhere). Gradients accumulate in the parameters, each loss scaled by 1/micro-batches, so the step's
/// gradient is that of the mean loss, as one process computes it over the same batch.
/// </summary>
public delegate double ForwardBackwardFunc<TBatch>(PipelineStage stage, PipelineChannel channel, IReadOnlyList<MicroBatch<TBatch>> microBatches, PipelineForwardStep<TBatch> forwardStep);

/// <summary>
/// The schedule factory (Megatron's get_forward_backward_func): the config's <c>parallel.schedule</c> picks the function
/// once; the trainer calls it every step.
/// </summary>
public static class PipelineSchedules
{
    public static readonly string[] Names = ["1f1b", "gpipe"];

    public static ForwardBackwardFunc<TBatch> Get<TBatch>(string name) => name switch
    {
        "1f1b" => OneForwardOneBackward,
        "gpipe" => GPipe,
        _ => throw new TianGongException($"parallel.schedule: expected one of {string.Join(", ", Names)}, got '{name}'"),
    };

    /// <summary>
    /// GPipe (Huang et al. 2019): every micro-batch forward, then every micro-batch backward. Simple, but each stage keeps
    /// the activations of all micro-batches until the flush.
    /// </summary>
    public static double GPipe<TBatch>(PipelineStage stage, PipelineChannel channel, IReadOnlyList<MicroBatch<TBatch>> microBatches, PipelineForwardStep<TBatch> forwardStep)
    {
        var steps = new Steps<TBatch>(stage, channel, microBatches, forwardStep);
        for (int i = 0; i < microBatches.Count; i++) steps.Forward(i);
        for (int i = 0; i < microBatches.Count; i++) steps.Backward(i);
        return steps.Finish();
    }

    /// <summary>
    /// 1F1B (PipeDream-Flush, Narayanan et al. 2021): stage s runs p−s−1 warm-up forwards, then alternates one forward and
    /// one backward, then drains the remaining backwards. The bubble is GPipe's, but a stage holds at most p−s micro-batches
    /// of activations instead of all of them.
    /// </summary>
    public static double OneForwardOneBackward<TBatch>(PipelineStage stage, PipelineChannel channel, IReadOnlyList<MicroBatch<TBatch>> microBatches, PipelineForwardStep<TBatch> forwardStep)
    {
        int m = microBatches.Count;
        int warmup = Math.Min(stage.Count - stage.Index - 1, m);
        var steps = new Steps<TBatch>(stage, channel, microBatches, forwardStep);
        int forward = 0, backward = 0;
        while (forward < warmup) steps.Forward(forward++);
        while (forward < m)
        {
            steps.Forward(forward++);
            steps.Backward(backward++);
        }
        while (backward < m) steps.Backward(backward++);
        return steps.Finish();
    }

    /// <summary>Forward only (evaluation): each micro-batch through the stage and on to the next; returns the loss sum on the last stage.</summary>
    public static double ForwardOnly<TBatch>(PipelineStage stage, PipelineChannel channel, IReadOnlyList<MicroBatch<TBatch>> microBatches, PipelineForwardStep<TBatch> forwardStep)
    {
        using var _ = no_grad();
        var steps = new Steps<TBatch>(stage, channel, microBatches, forwardStep);
        for (int i = 0; i < microBatches.Count; i++) steps.Forward(i);
        return steps.Finish();
    }

    /// <summary>The two halves a schedule orders: forward of micro-batch i (receive, compute, send) and its backward.</summary>
    private sealed class Steps<TBatch>(PipelineStage stage, PipelineChannel channel, IReadOnlyList<MicroBatch<TBatch>> microBatches, PipelineForwardStep<TBatch> forwardStep)
    {
        private readonly Tensor?[] inputs = new Tensor?[microBatches.Count];
        private readonly Tensor?[] outputs = new Tensor?[microBatches.Count];
        private double lossSum;

        public void Forward(int i)
        {
            var micro = microBatches[i];
            var input = stage.IsFirst ? micro.Input
                : channel.ReceiveForward(micro.ActivationShape, stage.ActivationType, micro.Input.device).DetachFromDisposeScope();
            var output = forwardStep(stage, input, micro.Batch).DetachFromDisposeScope();
            if (stage.IsLast)
            {
                lossSum += output.item<float>();
                // The step's loss is the mean over micro-batches: each contributes 1/m of its gradient.
                var scaled = (output / microBatches.Count).DetachFromDisposeScope();
                output.Dispose();
                output = scaled;
            }
            else channel.SendForward(output);
            if (!stage.IsFirst) inputs[i] = input;
            outputs[i] = output;
        }

        public void Backward(int i)
        {
            var output = outputs[i]!;
            using (var scope = NewDisposeScope())
            {
                if (stage.IsLast) output.backward();
                else
                {
                    var gradient = channel.ReceiveBackward(output.shape, output.dtype, output.device);
                    torch.autograd.backward([output], [gradient]);
                }
                if (!stage.IsFirst) channel.SendBackward(inputs[i]!.grad!);
            }
            // This micro-batch's graph is spent: release its tensors now (1F1B's memory bound depends on it).
            output.Dispose();
            outputs[i] = null;
            inputs[i]?.Dispose();
            inputs[i] = null;
        }

        public double Finish()
        {
            channel.Flush();
            foreach (var t in outputs.Concat(inputs)) t?.Dispose();
            return lossSum;
        }
    }
}
