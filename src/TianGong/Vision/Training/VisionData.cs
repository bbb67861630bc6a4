using TianGong.Training;

namespace TianGong.Vision.Training;

/// <summary>
/// One micro-batch of contrastive pretraining: two augmented views of the same images, normalised as the model
/// takes them, with the images' dataset indices (for the memory bank) and labels (for SupCon and SCAN).
/// </summary>
/// <param name="Index">The micro-batch number (step × grad_accum + micro): the queue position and CsMI's λ draw depend on it.</param>
/// <param name="Step">The optimizer step it belongs to.</param>
public sealed record VisionBatch(long Index, long Step, Tensor Indices, Tensor Labels, Tensor First, Tensor Second) : IDisposable
{
    public long Size => Indices.shape[0];

    public void Dispose()
    {
        Indices.Dispose();
        Labels.Dispose();
        First.Dispose();
        Second.Dispose();
    }
}

/// <summary>
/// The training images in epochs (<see cref="EpochSampler"/>), viewed by <see cref="ContrastiveAugmentation"/> seeded by
/// (seed, micro-batch): both a pure function of the index, so a resumed run sees exactly the batches of an unbroken one.
/// Validation: the first val_images test images, viewed with fixed seeds.
/// </summary>
public sealed class VisionTrainingData : ITrainingData<VisionBatch>
{
    private readonly LabelledImages train, validation;
    private readonly EpochSampler sampler;
    private readonly ContrastiveAugmentation augmentation;
    private readonly ImageProcessor processor;
    private readonly int batchSize, gradAccum;
    private readonly long seed;
    private readonly Device device;

    public VisionTrainingData(LabelledImages train, LabelledImages validation, ContrastiveAugmentation augmentation, ImageProcessor processor,
        int batchSize, int gradAccum, long seed, Device device)
    {
        if (validation.Count < 2) throw new TianGongException("validation: needs at least 2 images");
        (this.train, this.validation, this.augmentation, this.processor) = (train, validation, augmentation, processor);
        (this.batchSize, this.gradAccum, this.seed, this.device) = (batchSize, gradAccum, seed, device);
        sampler = new EpochSampler(train.Count, batchSize, seed);
    }

    public LabelledImages Train => train;

    public VisionBatch TrainBatch(long index)
    {
        var indices = sampler.Indices(index);
        return Make(train, indices, index, index / gradAccum, seed);
    }

    public IEnumerable<VisionBatch> ValidationBatches()
    {
        for (long start = 0; start + 1 < validation.Count; start += batchSize)
        {
            var indices = arange(start, Math.Min(start + batchSize, validation.Count), dtype: ScalarType.Int64);
            // Fixed views (seed ~seed) so that validation losses of different steps compare; never touches the bank.
            yield return Make(validation, indices, start / batchSize, -1, ~seed);
        }
    }

    /// <summary>Images at dataset <paramref name="indices"/> of the training split, unaugmented and normalised (CsMI's partners).</summary>
    public Tensor Normalised(Tensor indices)
    {
        using var scope = NewDisposeScope();
        return processor.Preprocess(train.Pixels(indices.cpu()) * 255).to(device).MoveToOuterDisposeScope();
    }

    private VisionBatch Make(LabelledImages split, Tensor indices, long index, long step, long viewSeed)
    {
        using var scope = NewDisposeScope();
        var pixels = split.Pixels(indices);                                                    // (B, C, H, W) in [0, 1]
        var (first, second) = augmentation.Views(pixels, viewSeed, index);
        var batch = new VisionBatch(index, step, indices.to(device), split.Labels.index_select(0, indices).to(device),
            processor.Preprocess(first * 255).to(device), processor.Preprocess(second * 255).to(device));
        foreach (var t in new[] { batch.Indices, batch.Labels, batch.First, batch.Second }) t.MoveToOuterDisposeScope();
        return batch;
    }
}
