using System.Text.Json;
using System.Text.Json.Serialization;

namespace TianGong.Data;

public enum DataSplit { Train, Val }

public sealed record TokenShardInfo(string File, long Tokens);

public sealed record TokenSplitInfo(IReadOnlyList<TokenShardInfo> Shards, long Tokens);

public sealed record DocumentCounts(long Train, long Val);

/// <summary>
/// <c>index.json</c> of a token directory, format <c>tiangong-tokens-v1</c>:
/// <code>
/// {"format":"tiangong-tokens-v1","dtype":"uint16","vocab_size":6000,"eos_id":2,
///  "train":{"shards":[{"file":"train-00000.bin","tokens":123}],"tokens":123},
///  "val":{"shards":[...],"tokens":7},"documents":{"train":40,"val":1},"source":"chinese-poetry:tang;form=any"}
/// </code>
/// Shards are raw little-endian tokens, each document followed by <c>eos_id</c>; a document may continue
/// into the next shard, so a split is one token stream cut into files.
/// </summary>
public sealed record TokenIndex(
    string Format,
    string Dtype,
    int VocabSize,
    int EosId,
    TokenSplitInfo Train,
    TokenSplitInfo Val,
    DocumentCounts Documents,
    string Source)
{
    public const string FormatName = "tiangong-tokens-v1";
    public const string FileName = "index.json";

    /// <summary>uint16 while every id fits (vocab_size ≤ 65536), halving disk and page-cache use; uint32 beyond.</summary>
    public static string DtypeFor(int vocabSize) => vocabSize <= 65536 ? "uint16" : "uint32";

    [JsonIgnore]
    public int BytesPerToken => Dtype switch
    {
        "uint16" => 2,
        "uint32" => 4,
        _ => throw new TianGongException($"Unknown token dtype '{Dtype}' (expected uint16 or uint32)."),
    };

    public TokenSplitInfo Split(DataSplit split) => split == DataSplit.Train ? Train : Val;

    public static TokenIndex Load(string directory)
    {
        var path = Path.Combine(directory, FileName);
        if (!File.Exists(path))
            throw new TianGongException($"No token index '{path}': run `./tiangong data prepare` to write it.");
        TokenIndex? index;
        try
        {
            using var stream = File.OpenRead(path);
            index = JsonSerializer.Deserialize(stream, DataJson.Default.TokenIndex);
        }
        catch (JsonException e)
        {
            throw new TianGongException($"Token index '{path}' is not valid JSON: {e.Message}", e);
        }
        if (index is null || index.Format != FormatName)
            throw new TianGongException($"Token index '{path}' has format '{index?.Format}', expected '{FormatName}'.");
        if (index.Train is null || index.Val is null || index.Documents is null)
            throw new TianGongException($"Token index '{path}' lacks 'train', 'val' or 'documents'.");
        if (index.Dtype is not ("uint16" or "uint32"))
            throw new TianGongException($"Token index '{path}' has dtype '{index.Dtype}', expected uint16 or uint32.");
        if (index.VocabSize < 1 || index.EosId < 0 || index.EosId >= index.VocabSize)
            throw new TianGongException($"Token index '{path}' has eos_id {index.EosId} outside vocab_size {index.VocabSize}.");
        return index;
    }

    /// <summary>Written atomically, so readers see either no index or a complete one.</summary>
    public void Save(string directory) =>
        AtomicFile.Write(Path.Combine(directory, FileName), stream => JsonSerializer.Serialize(stream, this, DataJson.Default.TokenIndex));
}
