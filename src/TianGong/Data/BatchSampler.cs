namespace TianGong.Data;

/// <summary>
/// Training batches of random windows and validation batches in order, from a <see cref="TokenDataset"/>.
/// A training window's start is a pure function of (seed, step, row): no sampler state, so resuming at step n
/// reproduces the uninterrupted run exactly, and ranks that each take a slice of rows (<c>firstRow</c>)
/// together see the same batch a single process would.
/// </summary>
public sealed class BatchSampler
{
    private readonly TokenDataset dataset;
    private readonly ulong seed;

    public BatchSampler(TokenDataset dataset, ulong seed)
    {
        this.dataset = dataset;
        this.seed = seed;
    }

    /// <summary>Start of the training window for global row <paramref name="row"/> of step <paramref name="step"/>; uniform over every start that fits seqLen + 1 tokens.</summary>
    public long WindowStart(long step, long row, int seqLen)
    {
        var starts = dataset.TrainTokens - seqLen;
        if (seqLen < 1 || starts < 1)
            throw new TianGongException(
                $"The train split has {dataset.TrainTokens} tokens; a sequence of {seqLen} needs at least {seqLen + 1}.");
        return (long)SplitMix64.ToRange(SplitMix64.Hash(seed, (ulong)step, (ulong)row), (ulong)starts);
    }

    /// <summary>
    /// Rows firstRow .. firstRow + batchSize - 1 of step <paramref name="step"/>: int64 (B, T) tensors on the CPU,
    /// <c>target[b, t] = input[b, t + 1]</c> (the next token).
    /// </summary>
    public (Tensor Input, Tensor Target) GetBatch(long step, int batchSize, int seqLen, long firstRow = 0)
    {
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "must be at least 1");
        var starts = new long[batchSize];
        for (var b = 0; b < batchSize; b++) starts[b] = WindowStart(step, firstRow + b, seqLen);
        return Build(DataSplit.Train, starts, seqLen);
    }

    /// <summary>
    /// The validation split cut into consecutive, non-overlapping windows of seqLen (+1 for the last target),
    /// batchSize windows per batch, at most maxBatches batches, always the same ones. The last batch may have
    /// fewer rows, so every window is evaluated once; weight losses by row count when averaging.
    /// </summary>
    public IEnumerable<(Tensor Input, Tensor Target)> GetValBatches(int batchSize, int seqLen, int maxBatches)
    {
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "must be at least 1");
        if (maxBatches < 1) throw new ArgumentOutOfRangeException(nameof(maxBatches), maxBatches, "must be at least 1");
        if (seqLen < 1 || dataset.ValTokens < seqLen + 1)
            throw new TianGongException(
                $"The validation split has {dataset.ValTokens} tokens; a sequence of {seqLen} needs at least {seqLen + 1}. " +
                "Raise the validation fraction or shorten the sequence.");
        return Iterate(batchSize, seqLen, maxBatches);
    }

    private IEnumerable<(Tensor Input, Tensor Target)> Iterate(int batchSize, int seqLen, int maxBatches)
    {
        var windows = (dataset.ValTokens - 1) / seqLen;
        for (long first = 0, batch = 0; first < windows && batch < maxBatches; first += batchSize, batch++)
        {
            var rows = (int)Math.Min(batchSize, windows - first);
            var starts = new long[rows];
            for (var b = 0; b < rows; b++) starts[b] = (first + b) * seqLen;
            yield return Build(DataSplit.Val, starts, seqLen);
        }
    }

    // One read of seqLen + 1 tokens per row into flat arrays, then one tensor each: no per-row tensor ops.
    private (Tensor Input, Tensor Target) Build(DataSplit split, long[] starts, int seqLen)
    {
        var rows = starts.Length;
        var input = new long[rows * seqLen];
        var target = new long[rows * seqLen];
        var window = new long[seqLen + 1];
        for (var b = 0; b < rows; b++)
        {
            dataset.Read(split, starts[b], window);
            window.AsSpan(0, seqLen).CopyTo(input.AsSpan(b * seqLen, seqLen));
            window.AsSpan(1, seqLen).CopyTo(target.AsSpan(b * seqLen, seqLen));
        }
        long[] shape = [rows, seqLen]; // (B, T)
        return (torch.tensor(input, shape), torch.tensor(target, shape));
    }
}
