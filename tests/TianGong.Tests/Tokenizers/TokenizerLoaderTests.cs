using System.Text;
using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Tokenizers;

namespace TianGong.Tests.Tokenizers;

/// <summary>Each Hugging Face tokenizer layout, written by hand in its real format into a temp folder.</summary>
public sealed class TokenizerLoaderTests : IDisposable
{
    private readonly string folder = TestModels.TempDir();

    public void Dispose() => Directory.Delete(folder, recursive: true);

    private const string Qwen2Template = @"{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    private const string Llama3Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    private static string Spell(string text) => ByteLevelAlphabet.Spell(Encoding.UTF8.GetBytes(text));

    /// <summary>The 256 byte tokens (id = byte) plus <paramref name="extra"/> from id 256 on, spelled in the byte-level alphabet.</summary>
    private static JsonObject ByteVocab(params string[] extra)
    {
        var vocab = new JsonObject();
        for (int b = 0; b < 256; b++) vocab[ByteLevelAlphabet.ToChar((byte)b).ToString()] = b;
        for (int i = 0; i < extra.Length; i++) vocab[Spell(extra[i])] = 256 + i;
        return vocab;
    }

    private static JsonArray Added(params (int Id, string Content)[] tokens) => new([.. tokens.Select(t => (JsonNode)new JsonObject
    {
        ["id"] = t.Id, ["content"] = t.Content, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
        ["normalized"] = false, ["special"] = true,
    })]);

    private static JsonObject ByteLevel(bool useRegex) => new()
    {
        ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = useRegex,
    };

    private static JsonObject BpeJson(JsonObject vocab, (string, string)[] merges, JsonArray added, JsonNode? preTokenizer = null,
        JsonNode? normalizer = null, bool ignoreMerges = false) => new()
    {
        ["version"] = "1.0", ["truncation"] = null, ["padding"] = null, ["added_tokens"] = added,
        ["normalizer"] = normalizer, ["pre_tokenizer"] = preTokenizer ?? ByteLevel(useRegex: true), ["post_processor"] = null,
        ["decoder"] = ByteLevel(useRegex: true),
        ["model"] = new JsonObject
        {
            ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = null,
            ["end_of_word_suffix"] = null, ["fuse_unk"] = false, ["byte_fallback"] = false, ["ignore_merges"] = ignoreMerges,
            ["vocab"] = vocab,
            ["merges"] = new JsonArray([.. merges.Select(m => (JsonNode)new JsonArray(Spell(m.Item1), Spell(m.Item2)))]),
        },
    };

    private string Write(string name, JsonNode json) => Write(name, json.ToJsonString());

    private string Write(string name, string text)
    {
        var path = Path.Combine(folder, name);
        File.WriteAllText(path, text);
        return path;
    }

    // GPT-2 style: "he" "ll" "hell" "Ġw", then <|endoftext|>.
    private static readonly (string, string)[] Gpt2Merges = [("h", "e"), ("l", "l"), ("he", "ll"), (" ", "w")];
    private static readonly int[] HelloWorldIds = [258, 'o', 259, 'o', 'r', 'l', 'd', 260];

    private void WriteGpt2VocabAndMerges()
    {
        var vocab = ByteVocab("he", "ll", "hell", " w");
        vocab["<|endoftext|>"] = 260;
        Write(TokenizerLoader.VocabJsonFile, vocab);
        Write(TokenizerLoader.MergesFile, "#version: 0.2\n" + string.Join("\n", Gpt2Merges.Select(m => $"{Spell(m.Item1)} {Spell(m.Item2)}")) + "\n");
        Write(TokenizerLoader.TokenizerConfigFile, new JsonObject
        {
            ["bos_token"] = new JsonObject { ["__type"] = "AddedToken", ["content"] = "<|endoftext|>", ["special"] = true },
            ["eos_token"] = "<|endoftext|>",
        });
    }

    [Fact]
    public void Gpt2TokenizerJsonEncodesAsHuggingFaceDoes()
    {
        var vocab = ByteVocab("he", "ll", "hell", " w");
        Write(TokenizerLoader.TokenizerJsonFile, BpeJson(vocab, Gpt2Merges, Added((260, "<|endoftext|>"))));

        var tokenizer = TokenizerLoader.Load(folder)!;

        Assert.Equal(HelloWorldIds, tokenizer.Encode("hello world<|endoftext|>"));
        Assert.Equal("hello world", tokenizer.Decode(HelloWorldIds, skipSpecialTokens: true));
        Assert.Equal(260, tokenizer.EosId);
        Assert.Equal(ChatTemplate.Default, tokenizer.ChatTemplate);
    }

    [Fact]
    public void VocabJsonAndMergesTxtGiveTheIdsOfTheEquivalentTokenizerJson()
    {
        WriteGpt2VocabAndMerges();
        var fromPair = TokenizerLoader.Load(folder)!;
        var other = Path.Combine(folder, "json");
        Directory.CreateDirectory(other);
        File.WriteAllText(Path.Combine(other, TokenizerLoader.TokenizerJsonFile),
            BpeJson(ByteVocab("he", "ll", "hell", " w"), Gpt2Merges, Added((260, "<|endoftext|>"))).ToJsonString());
        var fromJson = TokenizerLoader.Load(other)!;

        foreach (var text in new[] { "hello world<|endoftext|>", "shell hello, wow!", "  he said\n\nwell <|endoftext|>x" })
            Assert.Equal(fromJson.Encode(text), fromPair.Encode(text));
        Assert.Equal(HelloWorldIds, fromPair.Encode("hello world<|endoftext|>"));
        Assert.Equal(["<|endoftext|>"], fromPair.SpecialTokens);
        Assert.Equal((260, 260), (fromPair.BosId, fromPair.EosId));
        Assert.Equal(Encoding.UTF8.GetBytes("hell"), fromPair.TokenBytes(258));
    }

    [Fact]
    public void HugeTokenIdsAreOneLineErrorsInsteadOfGigabyteTables()
    {
        var vocab = ByteVocab();
        vocab["zz"] = int.MaxValue;
        Write(TokenizerLoader.TokenizerJsonFile, BpeJson(vocab, [], []));
        var error = Assert.Throws<TianGongException>(() => TokenizerLoader.Load(folder));
        Assert.Contains("model.vocab[\"zz\"]", error.Message);
        Assert.Contains("ids are integers from 0 to 4194303", error.Message);

        Write(TokenizerLoader.TokenizerJsonFile, BpeJson(ByteVocab(), [], Added((int.MaxValue, "<huge>"))));
        Assert.Contains("added_tokens[0]", Assert.Throws<TianGongException>(() => TokenizerLoader.Load(folder)).Message);
    }

    [Fact]
    public void MergesTxtWithoutVocabJsonIsAnErrorNamingTheFolder()
    {
        Write(TokenizerLoader.MergesFile, "#version: 0.2\nh e\n");
        var error = Assert.Throws<TianGongException>(() => TokenizerLoader.Load(folder));
        Assert.Contains("vocab.json", error.Message);
        Assert.Contains(folder, error.Message);
    }

    [Fact]
    public void FolderWithoutTokenizerFilesHasNoTokenizer()
    {
        Write("config.json", "{}");
        Assert.Null(TokenizerLoader.Load(folder));
    }

    [Fact]
    public void TokenizerConfigOverridesEosAndGivesTheChatTemplate()
    {
        var added = Added((260, "<|endoftext|>"), (261, "<|im_start|>"), (262, "<|im_end|>"));
        Write(TokenizerLoader.TokenizerJsonFile, BpeJson(ByteVocab("he", "ll", "hell", " w"), Gpt2Merges, added));
        Assert.Equal(260, TokenizerLoader.Load(folder)!.EosId);

        Write(TokenizerLoader.TokenizerConfigFile, new JsonObject
        {
            ["eos_token"] = "<|im_end|>",
            ["pad_token"] = "<|endoftext|>",
            ["chat_template"] = Qwen2Template,
        });
        var tokenizer = TokenizerLoader.Load(folder)!;

        Assert.Equal((260, 262, 260), (tokenizer.BosId, tokenizer.EosId, tokenizer.PadId));
        var prompt = tokenizer.ChatTemplate!.Render([new ChatMessage("system", "x"), new ChatMessage("user", "hello")]);
        var ids = tokenizer.Encode(prompt);
        Assert.Equal(3, ids.Count(id => id == 261));
        Assert.Equal(2, ids.Count(id => id == 262));
        Assert.Equal("system\nx\nuser\nhello\nassistant\n", tokenizer.Decode(ids, skipSpecialTokens: true));
    }

    [Fact]
    public void A_template_that_cannot_be_rendered_fails_only_when_a_chat_is_rendered()
    {
        Write(TokenizerLoader.TokenizerJsonFile, BpeJson(ByteVocab("he", "ll", "hell", " w"), Gpt2Merges, Added((260, "<|endoftext|>"))));
        var config = Write(TokenizerLoader.TokenizerConfigFile, new JsonObject { ["chat_template"] = "{% for m in messages %}{{ m.content | frobnicate }}{% endfor %}" });

        var tokenizer = TokenizerLoader.Load(folder)!; // loading, encoding and scoring never touch the template
        Assert.Equal(HelloWorldIds, tokenizer.Encode("hello world<|endoftext|>"));
        var error = Assert.ThrowsAny<TianGongException>(() => tokenizer.ChatTemplate!.Render([new ChatMessage("user", "hi")]));
        Assert.Contains(config, error.Message);
        Assert.Contains("frobnicate", error.Message);

        Write(TokenizerLoader.TokenizerConfigFile, new JsonObject { ["chat_template"] = "{% if messages %}unclosed" });
        error = Assert.ThrowsAny<TianGongException>(() => TokenizerLoader.Load(folder)!.ChatTemplate!.Render([new ChatMessage("user", "hi")]));
        Assert.Contains("endif", error.Message);
    }

    [Fact]
    public void TokenizerConfigNamingAnUnknownTokenIsAnErrorNamingTheFile()
    {
        Write(TokenizerLoader.TokenizerJsonFile, BpeJson(ByteVocab(), [], Added((256, "<|endoftext|>"))));
        var config = Write(TokenizerLoader.TokenizerConfigFile, new JsonObject { ["eos_token"] = "</s>" });
        var error = Assert.Throws<TianGongException>(() => TokenizerLoader.Load(folder));
        Assert.Contains(config, error.Message);
        Assert.Contains("</s>", error.Message);
    }

    [Fact]
    public void SplitRegexNfcAndIgnoreMergesAreAppliedAsLlama3AndQwen2Files()
    {
        // Merges "3 4" then "1 2"; "45" and "café" are in the vocabulary without a merge making them.
        var vocab = ByteVocab("34", "12", "45", "café");
        var pre = new JsonObject
        {
            ["type"] = "Sequence",
            ["pretokenizers"] = new JsonArray(
                new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = Llama3Pattern }, ["behavior"] = "Isolated", ["invert"] = false },
                ByteLevel(useRegex: false)),
        };
        Write(TokenizerLoader.TokenizerJsonFile, BpeJson(vocab, [("3", "4"), ("1", "2")], Added((260, "<|end_of_text|>")), pre,
            new JsonObject { ["type"] = "NFC" }, ignoreMerges: true));

        var tokenizer = TokenizerLoader.Load(folder)!;

        // Digits split in threes ("123" "45"), so "3 4" never applies; "45" and "café" are whole vocabulary words.
        int[] ids = tokenizer.Encode("12345caf\u00e9<|end_of_text|>");
        Assert.Equal([257, '3', 258, 259, 260], ids);
        Assert.Equal("12345caf\u00e9", tokenizer.Decode(ids, skipSpecialTokens: true));
        // A decomposed "é" becomes the same word by NFC (ICU, no InvariantGlobalization).
        Assert.Equal(ids, tokenizer.Encode("12345cafe\u0301<|end_of_text|>"));
    }

    [Fact]
    public void UnknownComponentsAreErrorsNamingTheFileTheTypeAndTheJsonPath()
    {
        var pre = new JsonObject { ["type"] = "Sequence", ["pretokenizers"] = new JsonArray(ByteLevel(useRegex: false), new JsonObject { ["type"] = "Syllables" }) };
        var json = BpeJson(ByteVocab(), [], Added(), pre);
        var path = Write(TokenizerLoader.TokenizerJsonFile, json);
        var error = Assert.Throws<TianGongException>(() => TokenizerLoader.Load(folder));
        Assert.Contains(path, error.Message);
        Assert.Contains("`pre_tokenizer.pretokenizers[1].type` is `Syllables`", error.Message);

        json = BpeJson(ByteVocab(), [], Added());
        json["model"]!["type"] = "Trigram";
        Write(TokenizerLoader.TokenizerJsonFile, json);
        error = Assert.Throws<TianGongException>(() => TokenizerLoader.Load(folder));
        Assert.Contains(path, error.Message);
        Assert.Contains("`model.type` is `Trigram`", error.Message);
    }

    private void WriteBertTokenizerJson()
    {
        string[] tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "he", "hel", "##l", "##lo", ",", "世", "界", "!"];
        var vocab = new JsonObject();
        for (int i = 0; i < tokens.Length; i++) vocab[tokens[i]] = i;
        Write(TokenizerLoader.TokenizerJsonFile, new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = Added((0, "[PAD]"), (1, "[UNK]"), (2, "[CLS]"), (3, "[SEP]"), (4, "[MASK]")),
            ["normalizer"] = new JsonObject
            {
                ["type"] = "BertNormalizer", ["clean_text"] = true, ["handle_chinese_chars"] = true, ["strip_accents"] = null, ["lowercase"] = true,
            },
            ["pre_tokenizer"] = new JsonObject { ["type"] = "BertPreTokenizer" },
            ["post_processor"] = new JsonObject
            {
                ["type"] = "TemplateProcessing",
                ["single"] = JsonNode.Parse("""[{"SpecialToken":{"id":"[CLS]","type_id":0}},{"Sequence":{"id":"A","type_id":0}},{"SpecialToken":{"id":"[SEP]","type_id":0}}]"""),
            },
            ["decoder"] = new JsonObject { ["type"] = "WordPiece", ["prefix"] = "##", ["cleanup"] = true },
            ["model"] = new JsonObject
            {
                ["type"] = "WordPiece", ["unk_token"] = "[UNK]", ["continuing_subword_prefix"] = "##", ["max_input_chars_per_word"] = 100,
                ["vocab"] = vocab,
            },
        });
    }

    [Fact]
    public void WordPieceEncodesAsBertDoes()
    {
        WriteBertTokenizerJson();
        var tokenizer = TokenizerLoader.Load(folder)!;

        // Lowercased, accents stripped, each Han character its own word, longest-match-first pieces: hel ##lo , 世 界 !
        Assert.Equal([6, 8, 9, 10, 11, 12], tokenizer.Encode("Hello, 世界!"));
        // Accents are stripped after NFD.
        Assert.Equal([6, 8, 1], tokenizer.Encode("HÉLLO xyz"));
        Assert.Equal([2, 6, 8, 3], tokenizer.Encode("hello", addSpecialTokens: true));
        Assert.Equal([6, 8, 1], tokenizer.Encode("HELLO xyz"));
        Assert.Equal((2, 3, 0), (tokenizer.BosId, tokenizer.EosId, tokenizer.PadId));
        Assert.Equal(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], tokenizer.SpecialTokens);
        Assert.Equal(" hel", Encoding.UTF8.GetString(tokenizer.TokenBytes(6)));
        Assert.Equal("lo", Encoding.UTF8.GetString(tokenizer.TokenBytes(8)));
        Assert.Equal("hello", tokenizer.Decode([2, 6, 8, 3], skipSpecialTokens: true));
        Assert.Null(tokenizer.ChatTemplate);
    }

    [Fact]
    public void ModelFolderLoadFindsTheFolderTokenizer()
    {
        var config = TestModels.Gpt2(vocab: 261);
        using (var model = TianGong.Models.ModelConfigs.CreateCausalLM(config))
            ModelFolder.Save(folder, model, config, tokenizer: null);
        WriteGpt2VocabAndMerges();

        using var loaded = ModelFolder.Load(folder);

        var tokenizer = Assert.IsAssignableFrom<ITextTokenizer>(loaded.Tokenizer);
        Assert.Equal(261, tokenizer.VocabSize);
        Assert.Equal(HelloWorldIds, tokenizer.Encode("hello world<|endoftext|>"));
        Assert.Equal(260, tokenizer.EosId);
    }
}
