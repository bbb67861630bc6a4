using TorchSharp;
using Xunit;
using static TorchSharp.torch;
using TianGong.Data;

namespace TianGong.Tests.Data;

public sealed class BatchSamplerTests : IDisposable
{
    private readonly TempDirectory temp = new();
    private readonly TokenDataset dataset;

    public BatchSamplerTests()
    {
        // Small shards so that windows regularly straddle shard files.
        var options = new TokenShardWriterOptions(VocabSize: 1000, EosId: 0, ValFraction: 0.2, ShardTokens: 50, Seed: 3);
        new TokenShardWriter(options).Write(TokenShardTests.Documents(60), TokenShardTests.CodePoints(1000), temp.Path, "test");
        dataset = TokenDataset.Open(temp.Path);
    }

    public void Dispose()
    {
        dataset.Dispose();
        temp.Dispose();
    }

    private static long[] Values(Tensor t) => t.data<long>().ToArray();

    private long[] Window(DataSplit split, long start, int length)
    {
        var window = new long[length];
        dataset.Read(split, start, window);
        return window;
    }

    [Fact]
    public void SameSeedAndStepGiveTheSameBatchWhateverCameBefore()
    {
        var fresh = new BatchSampler(dataset, seed: 11);
        var used = new BatchSampler(dataset, seed: 11);
        for (var step = 0; step < 5; step++) used.GetBatch(step, 4, 16);

        var (input, target) = fresh.GetBatch(5, 4, 16);
        var (again, againTarget) = used.GetBatch(5, 4, 16);

        Assert.Equal(Values(input), Values(again));
        Assert.Equal(Values(target), Values(againTarget));
    }

    [Fact]
    public void DifferentStepsAndSeedsGiveDifferentBatches()
    {
        var sampler = new BatchSampler(dataset, seed: 11);

        var step0 = Values(sampler.GetBatch(0, 4, 16).Input);

        Assert.NotEqual(step0, Values(sampler.GetBatch(1, 4, 16).Input));
        Assert.NotEqual(step0, Values(new BatchSampler(dataset, seed: 12).GetBatch(0, 4, 16).Input));
    }

    [Fact]
    public void RowsAreWindowsOfTheTrainStreamAndTargetsAreShiftedByOne()
    {
        var sampler = new BatchSampler(dataset, seed: 5);
        const int batch = 3, seqLen = 20;

        var (input, target) = sampler.GetBatch(42, batch, seqLen);

        Assert.Equal(new long[] { batch, seqLen }, input.shape);
        Assert.Equal(new long[] { batch, seqLen }, target.shape);
        Assert.Equal(ScalarType.Int64, input.dtype);
        var inputs = Values(input);
        var targets = Values(target);
        for (var b = 0; b < batch; b++)
        {
            var window = Window(DataSplit.Train, sampler.WindowStart(42, b, seqLen), seqLen + 1);
            Assert.Equal(window[..seqLen], inputs[(b * seqLen)..((b + 1) * seqLen)]);
            Assert.Equal(window[1..], targets[(b * seqLen)..((b + 1) * seqLen)]);
        }
    }

    [Fact]
    public void WindowStartsCoverEveryValidStartAndNoMore()
    {
        var sampler = new BatchSampler(dataset, seed: 1);
        const int seqLen = 32;
        var lastStart = dataset.TrainTokens - seqLen - 1;
        Assert.True(lastStart > 0);

        var starts = Enumerable.Range(0, 400).SelectMany(step => Enumerable.Range(0, 8).Select(row => sampler.WindowStart(step, row, seqLen))).ToList();

        Assert.All(starts, s => Assert.InRange(s, 0, lastStart));
        Assert.Equal(0, starts.Min());
        Assert.Equal(lastStart, starts.Max());
    }

    [Fact]
    public void RanksTakingRowSlicesRebuildTheSingleProcessBatch()
    {
        var sampler = new BatchSampler(dataset, seed: 9);

        var whole = Values(sampler.GetBatch(7, 4, 8).Input);
        var halves = Values(sampler.GetBatch(7, 2, 8).Input).Concat(Values(sampler.GetBatch(7, 2, 8, firstRow: 2).Input));

        Assert.Equal(whole, halves);
    }

    [Fact]
    public void SequencesLongerThanTheSplitAreRefused()
    {
        var sampler = new BatchSampler(dataset, seed: 1);

        Assert.Throws<TianGongException>(() => sampler.GetBatch(0, 1, (int)dataset.TrainTokens));
        Assert.Throws<TianGongException>(() => sampler.GetValBatches(1, (int)dataset.ValTokens, 1));
    }

    [Fact]
    public void ValidationWalksTheValSplitInOrderTheSameWayEachTime()
    {
        var sampler = new BatchSampler(dataset, seed: 1);
        const int batch = 4, seqLen = 5;
        var windows = (dataset.ValTokens - 1) / seqLen;
        Assert.True(windows > batch, "fixture should give more than one batch of validation windows");

        var first = sampler.GetValBatches(batch, seqLen, int.MaxValue).ToList();
        var second = sampler.GetValBatches(batch, seqLen, int.MaxValue).ToList();

        Assert.Equal((windows + batch - 1) / batch, first.Count);
        Assert.Equal(first.Select(b => Values(b.Input)), second.Select(b => Values(b.Input)));
        Assert.Equal(windows, first.Sum(b => b.Input.shape[0]));
        var inputs = first.SelectMany(b => Values(b.Input)).ToArray();
        var targets = first.SelectMany(b => Values(b.Target)).ToArray();
        var stream = Window(DataSplit.Val, 0, (int)(windows * seqLen + 1));
        Assert.Equal(stream[..^1], inputs);
        Assert.Equal(stream[1..], targets);
        Assert.Equal(2, sampler.GetValBatches(batch, seqLen, maxBatches: 2).Count());
    }
}
