namespace TianGong.Training;

/// <summary>
/// What a loss function returns for one batch: the scalar to minimise and, optionally, named scalars logged beside it
/// (an auxiliary loss, an accuracy). Metrics are detached scalars; the trainer averages them like the loss.
/// </summary>
/// <param name="Loss">The mean loss over the batch, with its autograd graph.</param>
/// <param name="Examples">How many examples the mean is over: evaluation weights batches by it (the last one may be short).</param>
public sealed record LossRecord(Tensor Loss, long Examples = 1, IReadOnlyDictionary<string, Tensor>? Metrics = null);

/// <summary>The loss of <paramref name="model"/> on one batch: next-token cross-entropy for pretraining, another one for fine-tuning or distillation.</summary>
public delegate LossRecord LossFunction<in TBatch>(nn.Module model, TBatch batch);

/// <summary>Where the batches come from. Training batches are a pure function of their index, so a resumed run sees the same ones.</summary>
public interface ITrainingData<out TBatch>
{
    /// <summary>Micro-batch number <paramref name="index"/> (step × grad_accum + micro), on the training device.</summary>
    TBatch TrainBatch(long index);

    /// <summary>The validation batches, the same every time, on the training device.</summary>
    IEnumerable<TBatch> ValidationBatches();
}
