using System.Text.Json;
using TianGong.Tokenizers;

namespace TianGong.Tests.Tokenizers;

/// <summary>
/// encode(a, b) as Hugging Face tokenizers 0.22.2 gives it (Fixtures/tokenizers/components/pairs-expected.json, written
/// by pairs.js with the Rust library): ids and type ids, with and without special tokens, through BertProcessing
/// ([CLS] A [SEP] B [SEP]), RobertaProcessing (&lt;s&gt; A &lt;/s&gt;&lt;/s&gt; B &lt;/s&gt;, all type 0), TemplateProcessing's pair
/// template, and Llama 3's tokenizer.json with a ByteLevel post-processor alone (B is type 1 by default) and Llama
/// 3.1's with its bos template.
/// </summary>
public sealed class PairEncodingTests
{
    private static readonly string Folder = Path.Combine(AppContext.BaseDirectory, "Fixtures", "tokenizers", "components");
    private static readonly Lazy<JsonElement> Expected = new(() =>
        JsonDocument.Parse(File.ReadAllBytes(Path.Combine(Folder, "pairs-expected.json"))).RootElement);

    public static TheoryData<string> Components() => ["wordpiece_bert", "bytelevel_roberta", "unigram_metaspace"];

    [Theory]
    [MemberData(nameof(Components))]
    public void Component_pairs_match_the_Rust_library(string name) =>
        AssertPairs(name, PipelineTokenizer.Load(Path.Combine(Folder, name + ".json")));

    [Theory]
    [Trait("Category", "Slow")]
    [InlineData("llama3")]
    [InlineData("llama3_1")]
    public void Published_llama3_pairs_match_the_Rust_library(string name) =>
        AssertPairs(name, PipelineTokenizer.Load(Path.Combine(PublishedTokenizers.ModelsDir(name), "tokenizer.json")));

    [Fact]
    public void A_template_without_a_pair_template_refuses_pairs_and_single_encoding_is_unchanged()
    {
        var tokenizer = PipelineTokenizer.Load(Path.Combine(Folder, "wordpiece_bert.json"));
        Assert.Equal(tokenizer.Encode("hello world", addSpecialTokens: true), tokenizer.EncodeToTokens("hello world", null, true).Select(t => t.Id));
        var processor = new TemplateProcessor([new TemplatePiece.Sequence()]);
        var e = Assert.Throws<TianGongException>(() => processor.Process([[], []], addSpecialTokens: true));
        Assert.Contains("pair", e.Message);
    }

    private static void AssertPairs(string name, PipelineTokenizer tokenizer)
    {
        var pairs = Expected.Value.GetProperty("pairs").EnumerateArray().Select(p => (p[0].GetString()!, p[1].GetString()!)).ToArray();
        var expected = Expected.Value.GetProperty("tokenizers").GetProperty(name);
        Assert.True(pairs.Length >= 20);
        var failures = new List<string>();
        for (int i = 0; i < pairs.Length; i++)
        {
            foreach (bool special in new[] { false, true })
            {
                var tokens = tokenizer.EncodeToTokens(pairs[i].Item1, pairs[i].Item2, special);
                string suffix = special ? "_with_special_tokens" : "";
                string want = JsonSerializer.Serialize(new { ids = expected.GetProperty("ids" + suffix)[i], types = expected.GetProperty("type_ids" + suffix)[i] });
                string got = JsonSerializer.Serialize(new { ids = tokens.Select(t => t.Id), types = tokens.Select(t => t.TypeId) });
                if (want != got) failures.Add($"#{i} special={special} {JsonSerializer.Serialize(pairs[i])}:\n  want {want}\n  got  {got}");
            }
        }
        Assert.True(failures.Count == 0, $"{failures.Count} differences from the Rust library:\n" + string.Join("\n", failures.Take(10)));
    }
}
