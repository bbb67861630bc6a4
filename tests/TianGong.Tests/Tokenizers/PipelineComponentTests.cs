using System.Text.Json;
using TianGong.Tokenizers;

namespace TianGong.Tests.Tokenizers;

/// <summary>
/// Small tokenizer.json files written by hand (Fixtures/tokenizers/components/make_components.py), one per group of
/// components the published files do not all use: Unigram with byte fallback under Metaspace(prepend first) and
/// NFKC/Replace/Strip; WordPiece under BertNormalizer/BertPreTokenizer, under WhitespaceSplit + Punctuation(Contiguous)
/// + Digits + CharDelimiterSplit + Split(MergedWithNext, MergedWithPrevious) with NFD/StripAccents/Lowercase/Prepend,
/// and under Whitespace + inverted Split with NFKD; BPE with an end-of-word suffix; byte-level BPE with single_word,
/// lstrip/rstrip and normalized added tokens; Bert, Roberta, Template, ByteLevel and Sequence post-processors; WordPiece,
/// Strip, Metaspace, ByteFallback, Fuse, BPE and ByteLevel decoders. Expected ids, tokens, offsets and decoded text come
/// from the Rust tokenizers library (components-expected.json, written by expected.js).
/// </summary>
public sealed class PipelineComponentTests
{
    private static readonly string Folder = Path.Combine(AppContext.BaseDirectory, "Fixtures", "tokenizers", "components");
    private static readonly Lazy<JsonElement> Expected = new(() =>
        JsonDocument.Parse(File.ReadAllBytes(Path.Combine(Folder, "components-expected.json"))).RootElement);

    public static TheoryData<string> Names() =>
        ["unigram_metaspace", "wordpiece_bert", "wordpiece_splits", "wordpiece_whitespace", "bpe_suffix", "bytelevel_added"];

    [Theory]
    [MemberData(nameof(Names))]
    public void Encodes_and_decodes_as_the_Rust_library(string name)
    {
        var tokenizer = PipelineTokenizer.Load(Path.Combine(Folder, name + ".json"));
        var strings = Expected.Value.GetProperty("strings").EnumerateArray().Select(s => s.GetString()!).ToArray();
        var expected = Expected.Value.GetProperty("tokenizers").GetProperty(name);
        var failures = new List<string>();
        for (int i = 0; i < strings.Length; i++)
        {
            string text = strings[i];
            var tokens = tokenizer.EncodeToTokens(text, addSpecialTokens: false);
            var codePoint = CodePointIndex(text);
            string got = JsonSerializer.Serialize(new { ids = tokens.Select(t => t.Id), tokens = tokens.Select(t => t.Value),
                offsets = tokens.Select(t => new[] { codePoint[t.Start], codePoint[t.End] }) });
            string want = JsonSerializer.Serialize(new { ids = expected.GetProperty("ids")[i], tokens = expected.GetProperty("tokens")[i],
                offsets = expected.GetProperty("offsets")[i] });
            if (got != want) failures.Add($"#{i} {JsonSerializer.Serialize(text)}:\n  want {want}\n  got  {got}");

            int[] withSpecial = tokenizer.Encode(text, addSpecialTokens: true);
            if (JsonSerializer.Serialize(withSpecial) != expected.GetProperty("ids_with_special_tokens")[i].GetRawText())
                failures.Add($"#{i} with special tokens: want {expected.GetProperty("ids_with_special_tokens")[i]}, got {JsonSerializer.Serialize(withSpecial)}");
            foreach (var (skip, key) in new[] { (false, "decoded"), (true, "decoded_skip_special") })
            {
                string decoded = tokenizer.Decode(withSpecial, skipSpecialTokens: skip);
                if (decoded != expected.GetProperty(key)[i].GetString())
                    failures.Add($"#{i} {key}: want {JsonSerializer.Serialize(expected.GetProperty(key)[i].GetString())}, got {JsonSerializer.Serialize(decoded)}");
            }
        }
        Assert.True(failures.Count == 0, $"{failures.Count} differences:\n" + string.Join("\n", failures.Take(12)));
    }

    private static int[] CodePointIndex(string text)
    {
        var map = new int[text.Length + 1];
        for (int i = 0, cp = 0; i <= text.Length; i++)
        {
            map[i] = cp;
            if (i < text.Length && !char.IsHighSurrogate(text[i])) cp++;
        }
        return map;
    }
}
