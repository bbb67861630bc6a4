namespace TianGong.Data;

/// <summary>
/// A token directory written by <see cref="TokenShardWriter"/>, opened with its shards memory-mapped:
/// the OS pages tokens in on demand, so a corpus larger than RAM costs only address space.
/// Each split reads as one stream: a window may span shard boundaries. Reads are safe from several threads.
/// </summary>
public sealed class TokenDataset : IDisposable
{
    private readonly MappedShard[][] shards;
    // Per split, the global offset at which each shard starts, for a binary search by offset.
    private readonly long[][] starts;
    private bool disposed;

    private TokenDataset(string directory, TokenIndex index, MappedShard[][] shards)
    {
        Directory = directory;
        Index = index;
        this.shards = shards;
        starts = shards.Select(split =>
        {
            var offsets = new long[split.Length];
            for (var i = 1; i < split.Length; i++) offsets[i] = offsets[i - 1] + split[i - 1].Tokens;
            return offsets;
        }).ToArray();
    }

    public string Directory { get; }
    public TokenIndex Index { get; }
    public long TrainTokens => Index.Train.Tokens;
    public long ValTokens => Index.Val.Tokens;
    public int VocabSize => Index.VocabSize;
    public int EosId => Index.EosId;

    public long Tokens(DataSplit split) => Index.Split(split).Tokens;

    /// <summary>
    /// Opens and checks a token directory: the index must be complete and consistent, and every shard must exist
    /// with exactly <c>tokens × bytes-per-token</c> bytes; otherwise a <see cref="TianGongException"/> names the file.
    /// </summary>
    public static TokenDataset Open(string directory)
    {
        var index = TokenIndex.Load(directory);
        if (index.Dtype == "uint16" && index.VocabSize > 65536)
            throw new TianGongException(
                $"'{Path.Combine(directory, TokenIndex.FileName)}': dtype {index.Dtype} cannot hold vocab_size {index.VocabSize}.");
        var bytesPerToken = index.BytesPerToken;
        var opened = new List<MappedShard>();
        try
        {
            var mapped = new[] { DataSplit.Train, DataSplit.Val }
                .Select(split => OpenSplit(directory, index, split, bytesPerToken, opened))
                .ToArray();
            return new TokenDataset(directory, index, mapped);
        }
        catch
        {
            foreach (var shard in opened) shard.Dispose();
            throw;
        }
    }

    /// <summary>Copies <c>destination.Length</c> tokens of <paramref name="split"/> starting at global token <paramref name="offset"/>.</summary>
    public void Read(DataSplit split, long offset, Span<long> destination)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        var total = Tokens(split);
        if (offset < 0 || offset + destination.Length > total)
            throw new ArgumentOutOfRangeException(nameof(offset),
                $"Window [{offset}, {offset + destination.Length}) is outside the {split} split of {total} tokens.");
        var splitShards = shards[(int)split];
        var splitStarts = starts[(int)split];
        if (destination.IsEmpty) return;
        var shard = Array.BinarySearch(splitStarts, offset);
        if (shard < 0) shard = ~shard - 1;
        while (!destination.IsEmpty)
        {
            var local = offset - splitStarts[shard];
            var take = (int)Math.Min(destination.Length, splitShards[shard].Tokens - local);
            splitShards[shard].Read(local, destination[..take]);
            destination = destination[take..];
            offset += take;
            shard++;
        }
    }

    public void Dispose()
    {
        // Releasing a mapped view twice would fail; a second Dispose is a no-op.
        if (disposed) return;
        disposed = true;
        foreach (var split in shards)
            foreach (var shard in split) shard.Dispose();
    }

    private static MappedShard[] OpenSplit(string directory, TokenIndex index, DataSplit split, int bytesPerToken, List<MappedShard> opened)
    {
        var info = index.Split(split);
        var indexPath = Path.Combine(directory, TokenIndex.FileName);
        if (info.Shards.Sum(s => s.Tokens) != info.Tokens)
            throw new TianGongException(
                $"'{indexPath}': the {split} shards hold {info.Shards.Sum(s => s.Tokens)} tokens but the split says {info.Tokens}.");
        var result = new MappedShard[info.Shards.Count];
        for (var i = 0; i < result.Length; i++)
        {
            var shard = info.Shards[i];
            var path = Path.Combine(directory, shard.File);
            if (shard.File != Path.GetFileName(shard.File))
                throw new TianGongException($"'{indexPath}': shard name '{shard.File}' must be a plain file name.");
            if (!File.Exists(path))
                throw new TianGongException($"Token shard '{path}' listed in '{indexPath}' is missing.");
            var expected = shard.Tokens * bytesPerToken;
            var actual = new FileInfo(path).Length;
            if (actual != expected)
                throw new TianGongException(
                    $"Token shard '{path}' has {actual} bytes but '{indexPath}' expects {expected} " +
                    $"({shard.Tokens} {index.Dtype} tokens): the data is incomplete or from another run; prepare it again.");
            if (shard.Tokens == 0)
                throw new TianGongException($"Token shard '{path}' is empty; '{indexPath}' should not list it.");
            result[i] = new MappedShard(path, shard.Tokens, bytesPerToken);
            opened.Add(result[i]);
        }
        return result;
    }
}
