using Xunit;
using TianGong.Data;

namespace TianGong.Tests.Data;

public sealed class TokenShardTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    // Stands in for a tokenizer: one token per character.
    internal static Func<string, int[]> CodePoints(int vocabSize, int shift = 0) =>
        text => text.EnumerateRunes().Select(r => (r.Value + shift) % vocabSize).ToArray();

    internal static List<string> Documents(int count) =>
        Enumerable.Range(0, count).Select(i => $"第{i}篇 " + new string((char)('a' + i % 26), 3 + i % 7)).ToList();

    private static long[] ReadAll(TokenDataset dataset, DataSplit split)
    {
        var tokens = new long[dataset.Tokens(split)];
        dataset.Read(split, 0, tokens);
        return tokens;
    }

    private static long[] Expected(IEnumerable<string> documents, Func<string, int[]> encode, int eos) =>
        documents.SelectMany(d => encode(d).Append(eos)).Select(t => (long)t).ToArray();

    [Fact]
    public void TokensReadBackAsWrittenWithEosAfterEachDocument()
    {
        var documents = Documents(200);
        var encode = CodePoints(60000);
        var options = new TokenShardWriterOptions(VocabSize: 60000, EosId: 0, ValFraction: 0.1, Seed: 7);
        var dir = temp.Combine("tokens");

        var index = new TokenShardWriter(options).Write(documents, encode, dir, "test");

        var isVal = documents.Select((_, i) => TokenShardWriter.IsValidation(i, 7, 0.1)).ToList();
        Assert.InRange(isVal.Count(v => v), 1, 199);
        using var dataset = TokenDataset.Open(dir);
        Assert.Equal(Expected(documents.Where((_, i) => !isVal[i]), encode, 0), ReadAll(dataset, DataSplit.Train));
        Assert.Equal(Expected(documents.Where((_, i) => isVal[i]), encode, 0), ReadAll(dataset, DataSplit.Val));
        Assert.Equal(new DocumentCounts(isVal.Count(v => !v), isVal.Count(v => v)), index.Documents);
        Assert.Equal("uint16", index.Dtype);
        Assert.Equal(60000, dataset.VocabSize);
        Assert.Equal(0, dataset.EosId);
        Assert.Equal("test", dataset.Index.Source);
        Assert.Equal(dataset.TrainTokens * 2, new FileInfo(Path.Combine(dir, "train-00000.bin")).Length);
        Assert.Empty(Directory.EnumerateFiles(dir, "*.tmp*"));
    }

    [Fact]
    public void LargeVocabulariesAreStoredAsUInt32()
    {
        var documents = Documents(20);
        var encode = CodePoints(70000, shift: 65500); // ids above 65535 would wrap in uint16
        var dir = temp.Combine("wide");

        var index = new TokenShardWriter(new TokenShardWriterOptions(70000, EosId: 69999, ValFraction: 0)).Write(documents, encode, dir, "test");

        using var dataset = TokenDataset.Open(dir);
        Assert.Equal("uint32", index.Dtype);
        // With no validation fraction the last document still goes to val, so that split is never empty.
        Assert.Equal(Expected(documents[..^1], encode, 69999), ReadAll(dataset, DataSplit.Train));
        Assert.Equal(Expected(documents[^1..], encode, 69999), ReadAll(dataset, DataSplit.Val));
        Assert.Contains(ReadAll(dataset, DataSplit.Train), t => t > 65535);
        Assert.Equal(dataset.TrainTokens * 4, new FileInfo(Path.Combine(dir, "train-00000.bin")).Length);
    }

    [Fact]
    public void TinyShardSizeCutsManyShardsAndWindowsReadAcrossThem()
    {
        var documents = Documents(30);
        var encode = CodePoints(1000);
        var dir = temp.Combine("sharded");

        var index = new TokenShardWriter(new TokenShardWriterOptions(1000, 1, ValFraction: 0, ShardTokens: 7)).Write(documents, encode, dir, "test");

        var expected = Expected(documents[..^1], encode, 1);
        Assert.Equal(expected.Length, index.Train.Tokens);
        Assert.Equal((expected.Length + 6) / 7, index.Train.Shards.Count);
        Assert.All(index.Train.Shards.SkipLast(1), s => Assert.Equal(7, s.Tokens));
        Assert.Equal("train-00002.bin", index.Train.Shards[2].File);
        using var dataset = TokenDataset.Open(dir);
        var window = new long[20];
        dataset.Read(DataSplit.Train, 5, window); // spans shards 0..3
        Assert.Equal(expected[5..25], window);
        Assert.Throws<ArgumentOutOfRangeException>(() => dataset.Read(DataSplit.Train, expected.Length - 19, window));
    }

    [Fact]
    public void ShardOfTheWrongSizeIsReportedByName()
    {
        var dir = temp.Combine("broken");
        new TokenShardWriter(new TokenShardWriterOptions(1000, 1, ValFraction: 0, ShardTokens: 16)).Write(Documents(10), CodePoints(1000), dir, "test");
        var shard = Path.Combine(dir, "train-00001.bin");
        using (var stream = new FileStream(shard, FileMode.Open)) stream.SetLength(stream.Length - 2);

        var error = Assert.Throws<TianGongException>(() => TokenDataset.Open(dir));

        Assert.Contains(shard, error.Message);
        File.Delete(shard);
        Assert.Contains(shard, Assert.Throws<TianGongException>(() => TokenDataset.Open(dir)).Message);
    }

    [Fact]
    public void SplitIsDeterministicIndependentOfThreadsAndNeverEmpty()
    {
        var documents = Documents(300);
        var encode = CodePoints(5000);
        var serial = new TokenShardWriter(new TokenShardWriterOptions(5000, 2, Seed: 99, Parallelism: 1, EncodeBatch: 7))
            .Write(documents, encode, temp.Combine("serial"), "test");
        var parallel = new TokenShardWriter(new TokenShardWriterOptions(5000, 2, Seed: 99, Parallelism: 2, EncodeBatch: 64))
            .Write(documents, encode, temp.Combine("parallel"), "test");
        var reseeded = new TokenShardWriter(new TokenShardWriterOptions(5000, 2, Seed: 100))
            .Write(documents, encode, temp.Combine("reseeded"), "test");

        Assert.Equal(serial with { Source = "" }, parallel with { Source = "" }, new IndexComparer());
        foreach (var name in new[] { "train-00000.bin", "val-00000.bin" })
            Assert.Equal(File.ReadAllBytes(temp.Combine("serial", name)), File.ReadAllBytes(temp.Combine("parallel", name)));
        Assert.True(serial.Documents.Val > 0);
        Assert.NotEqual(File.ReadAllBytes(temp.Combine("serial", "val-00000.bin")), File.ReadAllBytes(temp.Combine("reseeded", "val-00000.bin")));
    }

    [Fact]
    public void TwoDocumentsAlwaysGiveEachSplitOne()
    {
        var documents = Documents(2);
        foreach (var fraction in new[] { 0.0, 0.01, 0.99 })
        {
            var index = new TokenShardWriter(new TokenShardWriterOptions(1000, 1, ValFraction: fraction))
                .Write(documents, CodePoints(1000), temp.Combine($"two-{fraction}"), "test");
            Assert.Equal(new DocumentCounts(1, 1), index.Documents);
        }
    }

    [Fact]
    public void RewritingRemovesShardsOfTheEarlierLargerRun()
    {
        var dir = temp.Combine("again");
        var writer = new TokenShardWriter(new TokenShardWriterOptions(1000, 1, ValFraction: 0, ShardTokens: 8));
        writer.Write(Documents(20), CodePoints(1000), dir, "first");

        var index = writer.Write(Documents(2), CodePoints(1000), dir, "second");

        var onDisk = Directory.EnumerateFiles(dir, "*.bin").Select(Path.GetFileName).Order().ToList();
        Assert.Equal(index.Train.Shards.Concat(index.Val.Shards).Select(s => s.File).Order().ToList(), onDisk);
        using var dataset = TokenDataset.Open(dir);
        Assert.Equal("second", dataset.Index.Source);
    }

    [Fact]
    public void TokensOutsideTheVocabularyFailAndLeaveNoIndex()
    {
        var dir = temp.Combine("bad");
        var writer = new TokenShardWriter(new TokenShardWriterOptions(100, 1));

        var error = Assert.Throws<TianGongException>(() => writer.Write(["ok", "bad"], text => text == "bad" ? [5, 100] : [5], dir, "test"));

        Assert.Contains("Document 1", error.Message);
        Assert.False(File.Exists(Path.Combine(dir, TokenIndex.FileName)));
        Assert.Empty(Directory.EnumerateFiles(dir));
    }

    [Fact]
    public void DisposedDatasetRefusesReadsAndMayBeDisposedAgain()
    {
        var dir = temp.Combine("closed");
        new TokenShardWriter(new TokenShardWriterOptions(1000, 1)).Write(Documents(5), CodePoints(1000), dir, "test");
        var dataset = TokenDataset.Open(dir);

        dataset.Dispose();
        dataset.Dispose();

        Assert.Throws<ObjectDisposedException>(() => dataset.Read(DataSplit.Train, 0, new long[1]));
    }

    // Records holding lists compare lists by reference; compare the parts that matter by value.
    private sealed class IndexComparer : IEqualityComparer<TokenIndex>
    {
        public bool Equals(TokenIndex? a, TokenIndex? b) =>
            a!.Documents == b!.Documents && a.Dtype == b.Dtype
            && a.Train.Shards.SequenceEqual(b.Train.Shards) && a.Val.Shards.SequenceEqual(b.Val.Shards);

        public int GetHashCode(TokenIndex obj) => obj.Documents.GetHashCode();
    }
}
