using System.Buffers.Binary;

namespace TianGong.Data;

/// <summary>
/// Appends one split's token stream to <c>{prefix}-00000.bin</c>, <c>{prefix}-00001.bin</c>, ... cutting a new
/// shard every <c>shardTokens</c> tokens. Shards are written under <c>.tmp</c> names and only renamed by
/// <see cref="Commit"/>; disposing without committing deletes them.
/// </summary>
internal sealed class ShardSink : IDisposable
{
    private const string TemporarySuffix = ".tmp";

    private readonly string directory;
    private readonly string prefix;
    private readonly int bytesPerToken;
    private readonly long shardTokens;
    private readonly List<TokenShardInfo> shards = [];
    private readonly byte[] buffer = new byte[1 << 16];
    private FileStream? current;
    private long currentTokens;
    private long totalTokens;
    private bool committed;

    public ShardSink(string directory, string prefix, int bytesPerToken, long shardTokens)
    {
        this.directory = directory;
        this.prefix = prefix;
        this.bytesPerToken = bytesPerToken;
        this.shardTokens = shardTokens;
    }

    public long Tokens => totalTokens;

    public void Append(ReadOnlySpan<int> tokens)
    {
        while (!tokens.IsEmpty)
        {
            if (current is null || currentTokens == shardTokens) StartShard();
            var take = (int)Math.Min(Math.Min(tokens.Length, shardTokens - currentTokens), buffer.Length / bytesPerToken);
            Encode(tokens[..take]);
            current!.Write(buffer, 0, take * bytesPerToken);
            currentTokens += take;
            totalTokens += take;
            tokens = tokens[take..];
        }
    }

    /// <summary>Closes the last shard and gives the final names; call <see cref="Commit"/> once everything is written.</summary>
    public TokenSplitInfo Finish()
    {
        CloseShard();
        return new TokenSplitInfo(shards.ToList(), totalTokens);
    }

    /// <summary>Renames the temporary shards to their final names.</summary>
    public void Commit()
    {
        foreach (var shard in shards)
        {
            var path = Path.Combine(directory, shard.File);
            File.Move(path + TemporarySuffix, path, overwrite: true);
        }
        committed = true;
    }

    public void Dispose()
    {
        current?.Dispose();
        current = null;
        if (committed) return;
        foreach (var shard in shards) File.Delete(Path.Combine(directory, shard.File) + TemporarySuffix);
    }

    private void Encode(ReadOnlySpan<int> tokens)
    {
        var bytes = buffer.AsSpan();
        if (bytesPerToken == 2)
            for (var i = 0; i < tokens.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(bytes[(2 * i)..], (ushort)tokens[i]);
        else
            for (var i = 0; i < tokens.Length; i++) BinaryPrimitives.WriteUInt32LittleEndian(bytes[(4 * i)..], (uint)tokens[i]);
    }

    private void StartShard()
    {
        CloseShard();
        var name = $"{prefix}-{shards.Count:D5}.bin";
        shards.Add(new TokenShardInfo(name, 0));
        current = new FileStream(Path.Combine(directory, name) + TemporarySuffix, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        currentTokens = 0;
    }

    private void CloseShard()
    {
        if (current is null) return;
        current.Flush(flushToDisk: true);
        current.Dispose();
        current = null;
        shards[^1] = shards[^1] with { Tokens = currentTokens };
    }
}
