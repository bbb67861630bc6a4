using TianGong.Data;

namespace TianGong.Vision;

/// <summary>
/// Which samples each training step sees, in epochs: every epoch is a fresh permutation drawn from (seed, epoch), and
/// step s takes the next batch of it (the incomplete last batch is dropped, as DataLoader's drop_last). A pure
/// function of (seed, step), so a resumed run sees exactly the batches an unbroken one would.
/// </summary>
public sealed class EpochSampler
{
    private readonly long count;
    private readonly int batchSize;
    private readonly long seed;
    private (long Epoch, long[] Order)? cached;   // the permutation of the epoch last asked for: steps come in order

    public EpochSampler(long count, int batchSize, long seed)
    {
        if (batchSize <= 0 || count < batchSize)
            throw new TianGongException($"batch_size: must be in 1..{count} (the number of training images), got {batchSize}");
        (this.count, this.batchSize, this.seed) = (count, batchSize, seed);
    }

    public long StepsPerEpoch => count / batchSize;

    /// <summary>The dataset indices (B) of step <paramref name="step"/>, int64.</summary>
    public Tensor Indices(long step)
    {
        long epoch = step / StepsPerEpoch, first = step % StepsPerEpoch * batchSize;
        if (cached is not { } c || c.Epoch != epoch)
        {
            using var generator = new Generator(SplitMix64.Hash((ulong)seed, (ulong)epoch, 0xE90C));
            using var order = randperm(count, generator: generator);
            cached = c = (epoch, order.data<long>().ToArray());
        }
        return tensor(c.Order.AsSpan((int)first, batchSize).ToArray());
    }
}

public static class LabelSubsets
{
    /// <summary>
    /// A class-balanced few-label subset, as semi-supervised benchmarks take "1% of the labels": from each class, the
    /// first round(fraction · n_c) samples (at least one) of a permutation drawn from <paramref name="seed"/>.
    /// Returns sorted dataset indices (int64).
    /// </summary>
    public static Tensor Balanced(Tensor labels, double fraction, long seed)
    {
        if (fraction is <= 0 or > 1 || double.IsNaN(fraction)) throw new TianGongException($"label fraction: must be in (0, 1], got {fraction}");
        using var generator = new Generator(SplitMix64.Hash((ulong)seed, 0x1ABE1));
        using var order = randperm(labels.shape[0], generator: generator);
        var permutation = order.data<long>().ToArray();
        var all = labels.to(ScalarType.Int64).data<long>().ToArray();
        var chosen = new List<long>();
        foreach (var group in permutation.GroupBy(i => all[i]))
        {
            var members = group.ToList();                                                    // in permutation order
            int take = Math.Max(1, (int)Math.Round(fraction * members.Count));
            chosen.AddRange(members.Take(take));
        }
        chosen.Sort();
        return tensor(chosen.ToArray());
    }
}
