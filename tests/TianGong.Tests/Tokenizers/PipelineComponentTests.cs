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

/// <summary>Our trainer's tokenizer (used by the data pipeline) and the tokenizer.json pipeline give the same ids.</summary>
public sealed class TrainedTokenizerPipelineTests
{
    [Fact]
    public void A_trained_tokenizer_encodes_the_same_through_both_paths_including_supplementary_planes()
    {
        string[] corpus = ["床前明月光，疑是地上霜。", "hello world, hello again 123", "𝟏𝟐𝟑 𠀀𠀁 😀😀 digits", "the quick brown fox jumps"];
        var trained = ByteLevelBpeTrainer.Train(Enumerable.Repeat(corpus, 20).SelectMany(c => c), new BpeTrainerOptions(300, 2));
        string path = Path.Combine(TestModels.TempDir(), "tokenizer.json");
        trained.Save(path);
        var pipeline = PipelineTokenizer.Load(path);
        foreach (var text in corpus.Append("a𝟏𝟐b 𠀀x <|endoftext|>y  \n\n z"))
        {
            Assert.Equal(pipeline.Encode(text), trained.Encode(text));
            Assert.Equal(text, pipeline.Decode(pipeline.Encode(text)));
        }
        // Code points, not UTF-16 units: 𝟏 is a digit (\p{N}+) and "!" punctuation, two pieces; over UTF-16 the two
        // surrogates would be "other" and join the "!" in one [^\s\p{L}\p{N}]+ piece.
        Assert.Equal([(0, 2), (2, 1)], Gpt2PreTokenizer.Pieces("𝟏!"));
        Assert.Equal([(0, 1), (1, 7), (8, 2)], Gpt2PreTokenizer.Pieces("a 𝟏𝟐𝟑𠀀")); // "a", " 𝟏𝟐𝟑" (a digit run), "𠀀" (a letter)
    }
}
