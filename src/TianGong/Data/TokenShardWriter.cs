namespace TianGong.Data;

/// <param name="VocabSize">Token ids must lie in [0, VocabSize); also picks uint16 or uint32 storage.</param>
/// <param name="EosId">Written after every document, so documents never run into each other unmarked.</param>
/// <param name="ValFraction">Expected share of documents held out for validation, in [0, 1).</param>
/// <param name="ShardTokens">Tokens per shard file (64Mi by default: 128 MiB of uint16).</param>
/// <param name="Seed">Seeds the train/val split.</param>
/// <param name="Parallelism">Threads that encode; 0 means one per core. Output does not depend on it.</param>
/// <param name="EncodeBatch">Documents read ahead and encoded together; bounds memory while encoding in parallel.</param>
public sealed record TokenShardWriterOptions(
    int VocabSize,
    int EosId,
    double ValFraction = 0.01,
    long ShardTokens = 64L << 20,
    ulong Seed = 1234,
    int Parallelism = 0,
    int EncodeBatch = 512)
{
    public void Validate()
    {
        if (VocabSize < 1) throw new TianGongException($"vocab_size must be at least 1, got {VocabSize}.");
        if (EosId < 0 || EosId >= VocabSize) throw new TianGongException($"eos_id must be in [0, {VocabSize}), got {EosId}.");
        if (!(ValFraction >= 0 && ValFraction < 1)) throw new TianGongException($"val fraction must be in [0, 1), got {ValFraction}.");
        if (ShardTokens < 1) throw new TianGongException($"shard size must be at least 1 token, got {ShardTokens}.");
        if (Parallelism < 0) throw new TianGongException($"parallelism must be 0 (all cores) or more, got {Parallelism}.");
        if (EncodeBatch < 1) throw new TianGongException($"encode batch must be at least 1, got {EncodeBatch}.");
    }
}

/// <summary>
/// Encodes documents into a token directory (see <see cref="TokenIndex"/> for the layout).
/// The split is decided per document index by a seeded hash, so it is the same on every run and for any
/// thread count. Crash safety: an old <c>index.json</c> is removed first, shards are written under
/// temporary names and renamed at the end, and the new index is written last.
/// </summary>
public sealed class TokenShardWriter
{
    private readonly TokenShardWriterOptions options;

    public TokenShardWriter(TokenShardWriterOptions options)
    {
        options.Validate();
        this.options = options;
    }

    /// <summary>Whether document number <paramref name="documentIndex"/> (0-based, in corpus order) goes to validation.</summary>
    public static bool IsValidation(long documentIndex, ulong seed, double valFraction) =>
        SplitMix64.ToUnit(SplitMix64.Hash(seed, (ulong)documentIndex)) < valFraction;

    /// <param name="encode">Called from several threads at once unless <c>Parallelism</c> is 1.</param>
    /// <param name="source">Recorded in the index, e.g. <see cref="ICorpus.Source"/>.</param>
    public TokenIndex Write(IEnumerable<string> documents, Func<string, int[]> encode, string directory, string source)
    {
        Directory.CreateDirectory(directory);
        File.Delete(Path.Combine(directory, TokenIndex.FileName));
        var dtype = TokenIndex.DtypeFor(options.VocabSize);
        var bytesPerToken = dtype == "uint16" ? 2 : 4;
        using var train = new ShardSink(directory, "train", bytesPerToken, options.ShardTokens);
        using var val = new ShardSink(directory, "val", bytesPerToken, options.ShardTokens);
        var counts = new long[2];

        // The newest document is held back until the next arrives: if the stream ends with one split still
        // empty, that last document moves there, so two or more documents always give both splits data.
        int[]? pending = null;
        var pendingSplit = DataSplit.Train;
        long index = 0;
        foreach (var encoded in EncodeInOrder(documents, encode))
        {
            CheckTokens(encoded, index);
            if (pending is not null) Append(pending, pendingSplit);
            pending = encoded;
            pendingSplit = IsValidation(index, options.Seed, options.ValFraction) ? DataSplit.Val : DataSplit.Train;
            index++;
        }
        if (index == 0)
            throw new TianGongException($"{source}: no documents to tokenize (the corpus is empty or holds only blank lines).");
        if (pending is not null)
        {
            var other = pendingSplit == DataSplit.Train ? DataSplit.Val : DataSplit.Train;
            if (counts[(int)other] == 0 && index >= 2) pendingSplit = other;
            Append(pending, pendingSplit);
        }

        var trainInfo = train.Finish();
        var valInfo = val.Finish();
        RemoveStaleShards(directory, trainInfo, valInfo);
        train.Commit();
        val.Commit();
        var result = new TokenIndex(TokenIndex.FormatName, dtype, options.VocabSize, options.EosId, trainInfo, valInfo,
            new DocumentCounts(counts[(int)DataSplit.Train], counts[(int)DataSplit.Val]), source);
        result.Save(directory);
        return result;

        void Append(int[] tokens, DataSplit split)
        {
            var sink = split == DataSplit.Train ? train : val;
            sink.Append(tokens);
            sink.Append([options.EosId]);
            counts[(int)split]++;
        }
    }

    // Reads EncodeBatch documents, encodes them on several threads into slots by position, then yields them
    // in corpus order: parallel speed, sequential output.
    private IEnumerable<int[]> EncodeInOrder(IEnumerable<string> documents, Func<string, int[]> encode)
    {
        var parallel = new ParallelOptions
        {
            MaxDegreeOfParallelism = options.Parallelism == 0 ? Environment.ProcessorCount : options.Parallelism,
        };
        foreach (var chunk in documents.Chunk(options.EncodeBatch))
        {
            var encoded = new int[chunk.Length][];
            Parallel.For(0, chunk.Length, parallel, i => encoded[i] = encode(chunk[i]));
            foreach (var tokens in encoded) yield return tokens;
        }
    }

    private void CheckTokens(int[] tokens, long documentIndex)
    {
        foreach (var token in tokens)
            if ((uint)token >= (uint)options.VocabSize)
                throw new TianGongException(
                    $"Document {documentIndex} encodes to token {token}, outside the vocabulary [0, {options.VocabSize}).");
    }

    // Shards from an earlier, larger run would otherwise linger next to the new index and confuse a reader.
    private static void RemoveStaleShards(string directory, TokenSplitInfo train, TokenSplitInfo val)
    {
        var keep = train.Shards.Concat(val.Shards).Select(s => s.File).ToHashSet();
        foreach (var pattern in new[] { "train-*.bin", "val-*.bin" })
            foreach (var path in Directory.EnumerateFiles(directory, pattern))
                if (!keep.Contains(Path.GetFileName(path))) File.Delete(path);
    }
}
