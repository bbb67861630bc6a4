using TianGong.Parallelism.Communication;

namespace TianGong.Parallelism.TensorParallel;

/// <summary>
/// How one parameter of the one-process model is split over the tensor-parallel ranks: along <see cref="Dim"/>, in
/// <see cref="Parts"/> equal blocks that are each split the same way (3 for GPT-2's fused q, k, v), rank r taking rows
/// [r·⌈n/tp⌉, min((r+1)·⌈n/tp⌉, n)) of each block. Splits of attention heads are exact (checked by the plan); a vocabulary
/// that tp does not divide leaves the last rank fewer rows, so no padding ever enters the model or its checkpoint.
/// </summary>
/// <param name="FullSize">Length of <see cref="Dim"/> in the one-process parameter.</param>
public sealed record ShardLayout(int Dim, long FullSize, int Parts = 1)
{
    private long BlockSize => FullSize / Parts;

    /// <summary>Rows of each block a rank holds at most (every rank but possibly the last holds exactly this many).</summary>
    public long Chunk(int ranks) => (BlockSize + ranks - 1) / ranks;

    /// <summary>First row and row count of <paramref name="rank"/>'s part of each block.</summary>
    public (long Start, long Length) Range(int rank, int ranks)
    {
        long chunk = Chunk(ranks);
        long start = Math.Min(rank * chunk, BlockSize);
        return (start, Math.Min(chunk, BlockSize - start));
    }

    /// <summary>This rank's shard of the whole tensor (a new tensor).</summary>
    public Tensor Slice(Tensor whole, int rank, int ranks)
    {
        if (whole.shape[Dim] != FullSize)
            throw new TianGongException($"tensor parallel: expected {FullSize} rows along dimension {Dim}, got [{string.Join(", ", whole.shape)}]");
        var (start, length) = Range(rank, ranks);
        if (Parts == 1) return whole.narrow(Dim, start, length).clone();
        using var scope = NewDisposeScope();
        var blocks = whole.chunk(Parts, Dim).Select(b => b.narrow(Dim, start, length)).ToList();
        return cat(blocks, Dim).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Collective over <paramref name="group"/>: the whole tensor from every rank's shard (on every rank). Shards are padded
    /// to the same length for the all-gather and the padding dropped again.
    /// </summary>
    public Tensor Gather(Tensor shard, ICommunicator group)
    {
        using var scope = NewDisposeScope();
        int ranks = group.Size;
        long chunk = Chunk(ranks);
        // (Parts·rows, ...) with the split dimension swapped to the front, each block padded to `chunk` rows.
        var front = shard.detach().to(CPU).transpose(0, Dim);
        var (_, mine) = Range(group.Rank, ranks);
        var blocks = front.chunk(Parts, 0)
            .Select(b => mine == chunk ? b : cat([b, zeros([chunk - mine, .. b.shape[1..]], b.dtype)], 0)).ToList();
        var local = cat(blocks, 0).contiguous();                                              // (Parts·chunk, rest...)
        var all = empty([ranks, .. local.shape], local.dtype);
        group.AllGather(local, all);                                                          // (ranks, Parts·chunk, rest...)
        var pieces = new List<Tensor>();
        for (int part = 0; part < Parts; part++)
            for (int r = 0; r < ranks; r++)
            {
                var (_, length) = Range(r, ranks);
                if (length > 0) pieces.Add(all[r].narrow(0, part * chunk, length));
            }
        return cat(pieces, 0).transpose(0, Dim).contiguous().to(shard.device).MoveToOuterDisposeScope();
    }
}
