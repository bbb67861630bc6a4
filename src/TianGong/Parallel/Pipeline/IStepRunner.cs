namespace TianGong.Parallelism.Pipeline;

/// <summary>
/// Runs the forward and backward passes of a training step in place of the trainer's own micro-batch loop: a pipeline
/// schedule (its stages exchange activations and gradients), or the model as one stage with recomputation. The trainer
/// still does everything around it (gradient sync, clipping, the optimizer step, logging, checkpoints).
/// </summary>
public interface IStepRunner<TBatch>
{
    /// <summary>Forward and backward over one step's batches (training.grad_accum of them); returns the step's mean loss, the same on every rank.</summary>
    double ForwardBackward(IReadOnlyList<TBatch> batches);

    /// <summary>The mean loss of one validation batch and its number of examples, the same on every rank.</summary>
    (double Loss, long Examples) Evaluate(TBatch batch);

    /// <summary>Called on every rank before a checkpoint: brings the model rank 0 saves up to date.</summary>
    void BeforeCheckpoint();
}
