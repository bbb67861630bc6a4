using System.Text.Json;
using TianGong.Tokenizers;

namespace TianGong.Tests.Tokenizers;

/// <summary>
/// Each published tokenizer encodes 62 strings of all scripts (CJK, emoji, 𝟏𝟐𝟑, Greek, Arabic, curly quotes,
/// whitespace runs, control chars, special-token strings) to exactly the ids Hugging Face tokenizers 0.22.2 gives
/// (computed once with @anush008/tokenizers, the Rust library bound for node; see Fixtures/tokenizers/expected.js),
/// with and without special tokens, and decodes them back to the same text.
/// </summary>
[Trait("Category", "Slow")]
public sealed class PublishedTokenizerTests
{
    private static readonly Lazy<JsonDocument> Expected = new(() => JsonDocument.Parse(File.ReadAllBytes(PublishedTokenizers.ExpectedIdsPath)));

    public static TheoryData<string> Names() => [.. PublishedTokenizers.Names];

    [Theory]
    [MemberData(nameof(Names))]
    public void Encodes_and_decodes_as_Hugging_Face_tokenizers(string name)
    {
        var tokenizer = PipelineTokenizer.Load(Path.Combine(PublishedTokenizers.ModelsDir(name), "tokenizer.json"));
        var root = Expected.Value.RootElement;
        var strings = root.GetProperty("strings").EnumerateArray().Select(s => s.GetString()!).ToArray();
        var expected = root.GetProperty("tokenizers").GetProperty(name);
        var plain = expected.GetProperty("ids").EnumerateArray().ToArray();
        var special = expected.GetProperty("ids_with_special_tokens").EnumerateArray().ToArray();
        var decoded = expected.GetProperty("decoded").EnumerateArray().ToArray();
        Assert.True(strings.Length >= 50);

        var failures = new List<string>();
        for (int i = 0; i < strings.Length; i++)
        {
            int[] want = [.. plain[i].EnumerateArray().Select(x => x.GetInt32())];
            int[] got = tokenizer.Encode(strings[i]);
            if (!want.SequenceEqual(got)) failures.Add($"#{i} {JsonSerializer.Serialize(strings[i])}: expected [{string.Join(",", want)}], got [{string.Join(",", got)}]");
            int[] wantSpecial = [.. special[i].EnumerateArray().Select(x => x.GetInt32())];
            int[] gotSpecial = tokenizer.Encode(strings[i], addSpecialTokens: true);
            if (!wantSpecial.SequenceEqual(gotSpecial)) failures.Add($"#{i} with special tokens: expected [{string.Join(",", wantSpecial)}], got [{string.Join(",", gotSpecial)}]");
            string text = tokenizer.Decode(want);
            if (text != decoded[i].GetString()) failures.Add($"#{i} decode: expected {JsonSerializer.Serialize(decoded[i].GetString())}, got {JsonSerializer.Serialize(text)}");
        }
        Assert.True(failures.Count == 0, $"{failures.Count} differences from Hugging Face:\n" + string.Join("\n", failures.Take(20)));
    }
}

/// <summary>tokenizer_config.json applied as transformers applies it to the published folders.</summary>
[Trait("Category", "Slow")]
public sealed class PublishedTokenizerConfigTests
{
    [Fact]
    public void Add_bos_token_counts_for_the_Llama_and_Gemma_classes_only_and_templates_wait_until_chat()
    {
        const string text = "Hello 𝟏𝟐𝟑 世界";
        // DeepSeek V3: LlamaTokenizerFast with add_bos_token true, while its tokenizer.json's post-processor adds nothing.
        var deepseek = TokenizerLoader.Load(PublishedTokenizers.ModelsDir("deepseek_v3"))!;
        Assert.Equal(0, deepseek.BosId);
        Assert.Equal([0, .. deepseek.Encode(text)], deepseek.Encode(text, addSpecialTokens: true));
        // Gemma 3: the post-processor adds <bos> and add_bos_token agrees; once, not twice.
        var gemma = TokenizerLoader.Load(PublishedTokenizers.ModelsDir("gemma3"))!;
        Assert.Equal([2, .. gemma.Encode(text)], gemma.Encode(text, addSpecialTokens: true));
        // Qwen3 (Qwen2Tokenizer): no bos; its <think> template is parsed only when a chat is rendered.
        var qwen = TokenizerLoader.Load(PublishedTokenizers.ModelsDir("qwen3"))!;
        Assert.Equal(qwen.Encode(text), qwen.Encode(text, addSpecialTokens: true));
        Assert.Equal(qwen.TokenToId("<|im_end|>"), qwen.EosId);
        Assert.Contains("<|im_end|>", qwen.ChatTemplate!.EndOfTurnMarkers());
    }
}
