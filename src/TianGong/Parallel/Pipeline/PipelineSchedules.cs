using System.Collections.Immutable;

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
/// Forward and backward of one step over its micro-batches on one rank's chunks (its virtual stages, in order; one chunk
/// unless the layers are interleaved); returns the sum of the micro-batch losses on the last stage (0 elsewhere).
/// Gradients accumulate in the parameters, each loss scaled by 1/micro-batches, so the step's gradient is that of the
/// mean loss, as one process computes it over the same batch.
/// </summary>
public delegate double ForwardBackwardFunc<TBatch>(IReadOnlyList<PipelineStage> chunks, PipelineChannel channel, IReadOnlyList<MicroBatch<TBatch>> microBatches, PipelineForwardStep<TBatch> forwardStep);

/// <summary>A schedule the config picked: its name, for the start-of-job message, and its function.</summary>
public sealed record PipelineSchedule<TBatch>(string Name, ForwardBackwardFunc<TBatch> Run);

/// <summary>
/// The schedule factory (Megatron's get_forward_backward_func): the config's <c>parallel.schedule</c> picks the function
/// once; the trainer calls it every step.
/// </summary>
public static class PipelineSchedules
{
    public static readonly ImmutableArray<string> Names = ["1f1b", "gpipe"];

    /// <param name="virtualStages">Chunks per rank: above 1, the interleaved schedules (1f1b: Megatron's interleaved 1F1B; gpipe: breadth-first).</param>
    public static PipelineSchedule<TBatch> Get<TBatch>(string name, int virtualStages = 1) => (name, virtualStages) switch
    {
        ("1f1b", > 1) => new("interleaved 1f1b", InterleavedOneForwardOneBackward),
        ("gpipe", > 1) => new("interleaved, breadth-first", BreadthFirst),
        ("1f1b", _) => new("1f1b", OneForwardOneBackward),
        ("gpipe", _) => new("gpipe", GPipe),
        _ => throw new TianGongException($"parallel.schedule: expected one of {string.Join(", ", Names)}, got '{name}'"),
    };

    /// <summary>The one chunk of a rank that is not interleaved.</summary>
    private static PipelineStage Single(IReadOnlyList<PipelineStage> chunks) =>
        chunks.Count == 1 ? chunks[0] : throw new InvalidOperationException($"this schedule runs one stage per rank, not {chunks.Count} (virtual stages need the interleaved schedule)");

    /// <summary>
    /// GPipe (Huang et al. 2019): every micro-batch forward, then every micro-batch backward. Simple, but each stage keeps
    /// the activations of all micro-batches until the flush.
    /// </summary>
    public static double GPipe<TBatch>(IReadOnlyList<PipelineStage> chunks, PipelineChannel channel, IReadOnlyList<MicroBatch<TBatch>> microBatches, PipelineForwardStep<TBatch> forwardStep)
    {
        var steps = new Steps<TBatch>(Single(chunks), channel, microBatches, forwardStep);
        for (int i = 0; i < microBatches.Count; i++) steps.Forward(i);
        for (int i = 0; i < microBatches.Count; i++) steps.Backward(i);
        return steps.Finish();
    }

    /// <summary>
    /// 1F1B (PipeDream-Flush, Narayanan et al. 2021): stage s runs p−s−1 warm-up forwards, then alternates one forward and
    /// one backward, then drains the remaining backwards. The bubble is GPipe's, but a stage holds at most p−s micro-batches
    /// of activations instead of all of them.
    /// </summary>
    public static double OneForwardOneBackward<TBatch>(IReadOnlyList<PipelineStage> chunks, PipelineChannel channel, IReadOnlyList<MicroBatch<TBatch>> microBatches, PipelineForwardStep<TBatch> forwardStep)
    {
        var stage = Single(chunks);
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

    /// <summary>
    /// Interleaved stages run breadth-first (Lamy-Poirier 2023): every micro-batch through the rank's first chunk, then
    /// through its second, and so on, then the backwards in the reverse order of chunks. With v chunks per rank the
    /// bubble shrinks as interleaved 1F1B's does, to (p−1)/(v·m) of the ideal time (Narayanan et al. 2021), since each
    /// rank waits for a chunk of 1/v of the layers instead of a whole stage; the activations of all micro-batches stay
    /// in memory until the backwards, as in GPipe. Every rank goes through its virtual stages in increasing order forward
    /// and decreasing order backward, so no receive waits for work that comes later on the sending rank.
    /// </summary>
    public static double BreadthFirst<TBatch>(IReadOnlyList<PipelineStage> chunks, PipelineChannel channel, IReadOnlyList<MicroBatch<TBatch>> microBatches, PipelineForwardStep<TBatch> forwardStep)
    {
        var steps = chunks.Select(c => new Steps<TBatch>(c, channel, microBatches, forwardStep)).ToList();
        foreach (var chunk in steps)
            for (int i = 0; i < microBatches.Count; i++) chunk.Forward(i);
        for (int c = steps.Count - 1; c >= 0; c--)
            for (int i = 0; i < microBatches.Count; i++) steps[c].Backward(i);
        return steps.Sum(chunk => chunk.Finish());
    }

    /// <summary>
    /// Interleaved 1F1B (Narayanan et al. 2021; Megatron's forward_backward_pipelining_with_interleaving): the m·v
    /// (micro-batch, chunk) forwards in groups of p micro-batches per chunk (chunk 0 for micro-batches 0..p−1, chunk 1 for
    /// the same, ..., then the next p), a warm-up of 2(p−r−1) + (v−1)·p forwards on rank r, then one forward and one
    /// backward alternately (backwards in the same grouping with the chunks reversed), then the remaining backwards.
    /// The bubble is breadth-first's, but a rank holds about (1 + (p−1)/(p·v))·p micro-batches of activations instead of
    /// all m. Needs m to be a multiple of p, as Megatron does.
    /// </summary>
    public static double InterleavedOneForwardOneBackward<TBatch>(IReadOnlyList<PipelineStage> chunks, PipelineChannel channel, IReadOnlyList<MicroBatch<TBatch>> microBatches, PipelineForwardStep<TBatch> forwardStep)
    {
        int p = chunks[0].Count / chunks.Count, v = chunks.Count, m = microBatches.Count, rank = chunks[0].Index;
        if (m % p != 0)
            throw new TianGongException($"parallel: interleaved 1F1B needs the micro-batches of a step (grad_accum × micro_batches = {m}) to be a multiple of pp={p}");
        var steps = chunks.Select(c => new Steps<TBatch>(c, channel, microBatches, forwardStep)).ToList();
        int total = m * v;
        // The k-th forward (backward) of this rank: chunk and micro-batch, in groups of p micro-batches per chunk.
        (int Chunk, int Micro) At(int k, bool forward)
        {
            int inGroup = k % (p * v), chunk = inGroup / p;
            return (forward ? chunk : v - 1 - chunk, k / (p * v) * p + inGroup % p);
        }
        int warmup = Math.Min((p - rank - 1) * 2 + (v - 1) * p, total);
        for (int k = 0; k < warmup; k++)
        {
            var (c, i) = At(k, forward: true);
            steps[c].Forward(i);
        }
        for (int k = 0; k < total - warmup; k++)
        {
            var (fc, fi) = At(k + warmup, forward: true);
            steps[fc].Forward(fi);
            var (bc, bi) = At(k, forward: false);
            steps[bc].Backward(bi);
        }
        for (int k = total - warmup; k < total; k++)
        {
            var (c, i) = At(k, forward: false);
            steps[c].Backward(i);
        }
        return steps.Sum(chunk => chunk.Finish());
    }

    /// <summary>Forward only (evaluation): each micro-batch through the rank's chunks in order and on to the next stage; returns the loss sum on the last stage.</summary>
    public static double ForwardOnly<TBatch>(IReadOnlyList<PipelineStage> chunks, PipelineChannel channel, IReadOnlyList<MicroBatch<TBatch>> microBatches, PipelineForwardStep<TBatch> forwardStep)
    {
        using var _ = no_grad();
        var steps = chunks.Select(c => new Steps<TBatch>(c, channel, microBatches, forwardStep)).ToList();
        foreach (var chunk in steps)
            for (int i = 0; i < microBatches.Count; i++) chunk.Forward(i);
        return steps.Sum(chunk => chunk.Finish());
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
                : channel.ReceiveForward(micro.ActivationShape, stage.ActivationType, micro.Input.device, stage.Index).DetachFromDisposeScope();
            var output = forwardStep(stage, input, micro.Batch).DetachFromDisposeScope();
            if (stage.IsLast)
            {
                lossSum += output.item<float>();
                // The step's loss is the mean over micro-batches: each contributes 1/m of its gradient.
                var scaled = (output / microBatches.Count).DetachFromDisposeScope();
                output.Dispose();
                output = scaled;
            }
            else channel.SendForward(output, stage.Index);
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
                    var gradient = channel.ReceiveBackward(output.shape, output.dtype, output.device, stage.Index);
                    torch.autograd.backward([output], [gradient]);
                }
                if (!stage.IsFirst) channel.SendBackward(inputs[i]!.grad!, stage.Index);
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
