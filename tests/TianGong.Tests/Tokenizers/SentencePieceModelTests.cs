using System.Text.Json;
using TianGong.Tokenizers;

namespace TianGong.Tests.Tokenizers;

/// <summary>
/// tokenizer.model read directly (Fixtures/tokenizers/sentencepiece, see its README): Llama 2's BPE model must encode
/// the 62 fixed strings to the ids Hugging Face tokenizers 0.22.2 gives with Llama 2's tokenizer.json
/// (llama2-hf-expected-ids.json), and ALBERT's Unigram model to the ids of the SentencePiece C++ library.
/// </summary>
public sealed class SentencePieceModelTests : IDisposable
{
    private readonly string folder = TestModels.TempDir();

    public void Dispose() => Directory.Delete(folder, recursive: true);

    private static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", "tokenizers", "sentencepiece", name);

    /// <summary>A model folder with only tokenizer.model and, optionally, a tokenizer_config.json.</summary>
    private string Folder(string model, string? config)
    {
        var dir = Directory.CreateDirectory(Path.Combine(folder, Guid.NewGuid().ToString("N"))).FullName;
        File.Copy(Fixture(model), Path.Combine(dir, TokenizerLoader.SentencePieceFile));
        if (config is not null) File.WriteAllText(Path.Combine(dir, TokenizerLoader.TokenizerConfigFile), config);
        return dir;
    }

    // As Llama-2-7b-hf's tokenizer_config.json says what matters here (class, bos/eos, legacy).
    private const string LlamaConfig = """
        {"tokenizer_class": "LlamaTokenizer", "add_bos_token": true, "add_eos_token": false, "legacy": true,
         "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": null}
        """;

    [Fact]
    public void Llama2_tokenizer_model_encodes_and_decodes_as_Hugging_Face_tokenizers_with_its_tokenizer_json()
    {
        var tokenizer = (PipelineTokenizer)TokenizerLoader.Load(Folder("llama2-tokenizer.model", LlamaConfig))!;
        using var expected = JsonDocument.Parse(File.ReadAllBytes(Fixture("llama2-hf-expected-ids.json")));
        var llama2 = expected.RootElement;
        var strings = llama2.GetProperty("strings").EnumerateArray().Select(s => s.GetString()!).ToArray();
        var plain = llama2.GetProperty("ids").EnumerateArray().ToArray();
        var special = llama2.GetProperty("ids_with_special_tokens").EnumerateArray().ToArray();
        var decoded = llama2.GetProperty("decoded").EnumerateArray().ToArray();
        Assert.Equal(62, strings.Length);
        var failures = new List<string>();
        for (int i = 0; i < strings.Length; i++)
        {
            int[] want = [.. plain[i].EnumerateArray().Select(x => x.GetInt32())];
            int[] got = tokenizer.Encode(strings[i]);
            if (!want.SequenceEqual(got)) failures.Add($"#{i} {JsonSerializer.Serialize(strings[i])}: expected [{string.Join(",", want)}], got [{string.Join(",", got)}]");
            int[] wantSpecial = [.. special[i].EnumerateArray().Select(x => x.GetInt32())];
            int[] gotSpecial = tokenizer.Encode(strings[i], addSpecialTokens: true);
            if (!wantSpecial.SequenceEqual(gotSpecial)) failures.Add($"#{i} with special tokens: expected [{string.Join(",", wantSpecial)}], got [{string.Join(",", gotSpecial)}]");
            if (tokenizer.Decode(want) != decoded[i].GetString()) failures.Add($"#{i} decode: {JsonSerializer.Serialize(tokenizer.Decode(want))}");
        }
        Assert.True(failures.Count == 0, $"{failures.Count} differences from Hugging Face:\n" + string.Join("\n", failures.Take(20)));
        Assert.Equal((32000, 1, 2), (tokenizer.VocabSize, tokenizer.BosId, tokenizer.EosId));
        Assert.Equal(["<unk>", "<s>", "</s>"], tokenizer.SpecialTokens);
    }

    [Fact]
    public void Llama2_merges_derived_from_the_pieces_are_those_of_its_Hugging_Face_tokenizer_json()
    {
        var spm = SentencePieceModelFile.Read(Fixture("llama2-tokenizer.model"));
        Assert.Equal(SentencePieceModelFile.ModelKind.Bpe, spm.Kind);
        Assert.True(spm.ByteFallback);
        Assert.Equal((0, 1, 2, -1), (spm.UnkId, spm.BosId, spm.EosId, spm.PadId));
        Assert.True(spm.AddDummyPrefix);
        Assert.Equal(SentencePieceType.Byte, spm.Pieces[3 + 'A'].Type);
        Assert.Equal("<0x41>", spm.Pieces[3 + 'A'].Piece);
        var vocab = spm.Pieces.Select((p, id) => (p.Piece, id)).ToDictionary(x => x.Piece, x => x.id);
        var merges = SentencePieceConverter.Merges(spm.Pieces, vocab);
        // Llama 2's Hugging Face tokenizer.json (as llama-tokenizer-js ships it) has 61,249 merges starting with these.
        Assert.Equal(61249, merges.Count);
        Assert.Equal([("▁", "t"), ("e", "r"), ("i", "n"), ("▁", "a"), ("e", "n"), ("o", "n"), ("▁t", "h"), ("▁", "th")], merges.Take(8));
    }

    [Fact]
    public void Legacy_false_prepends_the_space_to_the_first_piece_only()
    {
        string config = LlamaConfig.Replace("\"legacy\": true", "\"legacy\": false");
        var legacy = TokenizerLoader.Load(Folder("llama2-tokenizer.model", LlamaConfig))!;
        var current = TokenizerLoader.Load(Folder("llama2-tokenizer.model", config))!;
        // Both put ▁ in front of the text; after a special token only the legacy normalizer adds another one.
        Assert.Equal(legacy.Encode("Hello world"), current.Encode("Hello world"));
        Assert.Equal([1, 15043], legacy.Encode("<s>Hello")); // ▁Hello
        Assert.Equal([1, 10994], current.Encode("<s>Hello")); // Hello
        Assert.Equal("Hello world", current.Decode(current.Encode("Hello world")));
    }

    [Fact]
    public void Albert_unigram_model_encodes_as_Hugging_Face_tokenizers_with_its_converted_tokenizer_json()
    {
        // No tokenizer_config.json: transformers' generic SpmConverter (precompiled charsmap, Metaspace).
        var tokenizer = (PipelineTokenizer)TokenizerLoader.Load(Folder("albert-30k-clean.model", null))!;
        using var hf = JsonDocument.Parse(File.ReadAllBytes(Fixture("albert-hf-expected-ids.json")));
        using var spm = JsonDocument.Parse(File.ReadAllBytes(Fixture("spm-expected-ids.json")));
        var strings = hf.RootElement.GetProperty("strings").EnumerateArray().Select(s => s.GetString()!).ToArray();
        var ids = hf.RootElement.GetProperty("ids").EnumerateArray().Select(Ids).ToArray();
        var special = hf.RootElement.GetProperty("ids_with_special_tokens").EnumerateArray().Select(Ids).ToArray();
        var decoded = hf.RootElement.GetProperty("decoded").EnumerateArray().Select(d => d.GetString()).ToArray();
        var spmIds = spm.RootElement.GetProperty("ids").EnumerateArray().Select(Ids).ToArray();
        var model = SentencePieceModelFile.Read(Fixture("albert-30k-clean.model"));
        var userDefined = model.Pieces.Where(p => p.Type == SentencePieceType.UserDefined).Select(p => p.Piece).ToArray();
        Assert.Equal(SentencePieceModelFile.ModelKind.Unigram, model.Kind);
        Assert.NotEmpty(model.PrecompiledCharsmap);
        Assert.Equal(["(", ")", "\"", "-", ".", "–", "£", "€"], userDefined);
        var failures = new List<string>();
        int agreeWithSentencePiece = 0;
        for (int i = 0; i < strings.Length; i++)
        {
            int[] got = tokenizer.Encode(strings[i]);
            if (!ids[i].SequenceEqual(got))
                failures.Add($"#{i} {JsonSerializer.Serialize(strings[i])}: expected [{string.Join(",", ids[i].Select(tokenizer.IdToToken))}], got [{string.Join(",", got.Select(tokenizer.IdToToken))}]");
            if (!special[i].SequenceEqual(tokenizer.Encode(strings[i], addSpecialTokens: true))) failures.Add($"#{i} with special tokens");
            if (tokenizer.Decode(ids[i]) != decoded[i]) failures.Add($"#{i} decode: {JsonSerializer.Serialize(tokenizer.Decode(ids[i]))}");
            if (spmIds[i].SequenceEqual(got)) agreeWithSentencePiece++;
        }
        // SentencePiece itself (not the converted tokenizer transformers uses) differs on 10: the converted Metaspace
        // puts ▁ in front of the text after each USER_DEFINED symbol, and one run of combining marks.
        Assert.Equal(52, agreeWithSentencePiece);
        Assert.True(failures.Count == 0, $"{failures.Count} differences from Hugging Face:\n" + string.Join("\n", failures.Take(20)));

        static int[] Ids(JsonElement e) => [.. e.EnumerateArray().Select(x => x.GetInt32())];
    }

    [Fact]
    public void A_truncated_or_hostile_model_file_is_one_line_naming_the_problem()
    {
        byte[] model = File.ReadAllBytes(Fixture("llama2-tokenizer.model"));
        foreach (int length in new[] { 0, 1, 2, 7, 100, 4096, model.Length / 2, model.Length - 1 })
        {
            string dir = Directory.CreateDirectory(Path.Combine(folder, $"cut{length}")).FullName;
            File.WriteAllBytes(Path.Combine(dir, TokenizerLoader.SentencePieceFile), model[..length]);
            var e = Assert.Throws<TianGongException>(() => TokenizerLoader.Load(dir));
            Assert.Contains(TokenizerLoader.SentencePieceFile, e.Message);
            Assert.DoesNotContain('\n', e.Message);
        }
        // A piece of type 9, a length prefix of 2^31, a piece without text, a CHAR model.
        AssertRejected([0x0A, 0x0A, 0x0A, 0x01, 0x61, 0x18, 0x09, 0x15, 0, 0, 0, 0], "type 9");
        AssertRejected([0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x07], "SentencePiece model");
        AssertRejected([0x0A, 0x02, 0x18, 0x02], "empty");
        AssertRejected([0x0A, 0x05, 0x0A, 0x01, 0x61, 0x18, 0x02, 0x12, 0x02, 0x18, 0x04, 0x1A, 0x00], "CHAR");
        AssertRejected([0x0A, 0x05, 0x0A, 0x01, 0x61, 0x18, 0x01, 0x12, 0x00, 0x1A, 0x00], "not of type UNKNOWN");
        AssertRejected([0x0A, 0x05, 0x0A, 0x01, 0x61, 0x18, 0x02], "no trainer_spec");

        void AssertRejected(byte[] bytes, string expected)
        {
            var e = Assert.Throws<TianGongException>(() => SentencePieceModelFile.Parse(bytes, "x.model"));
            Assert.Contains(expected, e.Message);
            Assert.StartsWith("x.model", e.Message);
        }
    }
}
