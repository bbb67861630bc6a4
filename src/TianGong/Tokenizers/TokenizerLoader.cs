using System.Text.Json;

namespace TianGong.Tokenizers;

/// <summary>
/// Finds the tokenizer of a Hugging Face model folder, in the order transformers prefers: tokenizer.json
/// (byte-level BPE, incl. Llama 3 / Qwen2 Split regexes, or BERT WordPiece), then GPT-2's vocab.json + merges.txt,
/// then SentencePiece's tokenizer.model (converted as transformers converts it, see <see cref="SentencePieceConverter"/>).
/// tokenizer_config.json, when present, names bos/eos/pad, adds special
/// tokens and gives the chat template.
/// </summary>
public static class TokenizerLoader
{
    public const string TokenizerJsonFile = "tokenizer.json";
    public const string TokenizerConfigFile = "tokenizer_config.json";
    public const string VocabJsonFile = "vocab.json";
    public const string MergesFile = "merges.txt";
    public const string SentencePieceFile = "tokenizer.model";

    /// <summary>transformers reads a template from this file in preference to tokenizer_config.json's `chat_template`.</summary>
    public const string ChatTemplateFile = "chat_template.jinja";

    /// <summary>The folder's tokenizer, or null when it has none of the files above.</summary>
    public static ITextTokenizer? Load(string modelDir)
    {
        var config = TokenizerConfig.Read(Path.Combine(modelDir, TokenizerConfigFile));
        string tokenizerJson = Path.Combine(modelDir, TokenizerJsonFile);
        string vocabJson = Path.Combine(modelDir, VocabJsonFile), merges = Path.Combine(modelDir, MergesFile);
        string spModel = Path.Combine(modelDir, SentencePieceFile);
        string? templateSource = File.Exists(Path.Combine(modelDir, ChatTemplateFile))
            ? File.ReadAllText(Path.Combine(modelDir, ChatTemplateFile)) : config?.ChatTemplateSource;
        string templateWhere = templateSource is not null && templateSource != config?.ChatTemplateSource
            ? Path.Combine(modelDir, ChatTemplateFile) : config?.Path ?? modelDir;
        if (File.Exists(tokenizerJson))
        {
            var parts = TokenizerJsonReader.Read(tokenizerJson);
            // BERT-style models (WordPiece) do not chat; everything else gets its template or the ChatML default.
            bool chats = parts.Model is not WordPieceModel;
            return new PipelineTokenizer(parts, Settings(config, tokenizerJson, templateSource, templateWhere, chats));
        }
        if (File.Exists(vocabJson) || File.Exists(merges))
        {
            if (!File.Exists(vocabJson) || !File.Exists(merges))
                throw new TianGongException($"{modelDir}: a GPT-2 tokenizer needs both {VocabJsonFile} and {MergesFile}, but only one is there");
            return new PipelineTokenizer(LoadVocabAndMerges(vocabJson, merges, config), Settings(config, vocabJson, templateSource, templateWhere, chats: true));
        }
        if (File.Exists(spModel))
        {
            var parts = SentencePieceConverter.Convert(SentencePieceModelFile.Read(spModel),
                new SentencePieceConverter.Options(config?.TokenizerClass, config?.Legacy, config?.AddPrefixSpace), spModel);
            return new PipelineTokenizer(parts, Settings(config, spModel, templateSource, templateWhere, chats: true));
        }
        return null;
    }

    /// <summary>
    /// tokenizer_config.json as transformers applies it: its added_tokens_decoder entries join the added tokens, its
    /// named tokens are special, and for the Llama and Gemma classes add_bos_token/add_eos_token rebuild the
    /// post-processor (transformers' LlamaTokenizerFast.update_post_processor).
    /// </summary>
    private static TokenizerSettings Settings(TokenizerConfig? config, string source, string? templateSource, string templateWhere, bool chats)
    {
        var template = templateSource is not null ? ChatTemplate.FromJinja(templateSource, config?.BosToken, config?.EosToken, templateWhere)
            : chats ? ChatTemplate.Default : null;
        if (config is null) return TokenizerSettings.None(source) with { ChatTemplate = template };
        return new TokenizerSettings(config.Path, true, config.BosToken, config.EosToken, config.PadToken,
            [.. config.NamedTokens.OfType<string>(), .. config.AdditionalSpecialTokens], config.AddedTokens, null, template)
        {
            BosEosOverride = config.HonoursAddBosEos ? (config.AddBosToken ?? true, config.AddEosToken ?? false) : null,
        };
    }

    /// <summary>
    /// GPT-2's older layout, as transformers converts it: byte-level BPE with GPT-2's regex. Its vocab.json lists
    /// &lt;|endoftext|&gt; as an ordinary entry; HF makes the config's special tokens (and added_tokens_decoder)
    /// added tokens, so we do too.
    /// </summary>
    private static TokenizerPipelineParts LoadVocabAndMerges(string vocabPath, string mergesPath, TokenizerConfig? config)
    {
        Dictionary<string, int> vocab;
        try
        {
            vocab = JsonSerializer.Deserialize<Dictionary<string, int>>(File.ReadAllBytes(vocabPath))
                ?? throw new TianGongException($"{vocabPath}: not a JSON object of token → id");
        }
        catch (JsonException e)
        {
            throw new TianGongException($"{vocabPath}: not a JSON object of token → id ({e.Message})", e);
        }
        var mergeList = new List<(string, string)>();
        int lineNumber = 0;
        foreach (var line in File.ReadLines(mergesPath))
        {
            lineNumber++;
            if (line.Length == 0 || (lineNumber == 1 && line.StartsWith("#version", StringComparison.Ordinal))) continue;
            if (line.Split(' ') is not [var left, var right])
                throw new TianGongException($"{mergesPath}: line {lineNumber} is `{line}`; expected two tokens separated by one space");
            mergeList.Add((left, right));
        }
        var added = new List<AddedToken>();
        foreach (var name in config?.NamedTokens ?? [])
            if (name is not null && vocab.TryGetValue(name, out int id)) added.Add(new AddedToken(id, name));
        var model = new BpeModel(vocab, mergeList, null, null, null, false, false, false, mergesPath);
        return new TokenizerPipelineParts(null, new ByteLevelPreTokenizer(addPrefixSpace: false, useRegex: true), model, null,
            new ByteLevelDecoder(), added);
    }
}

/// <summary>tokenizer_config.json: the named special tokens, added tokens and chat template we use.</summary>
internal sealed record TokenizerConfig(string Path, string? BosToken, string? EosToken, string? PadToken, string? UnkToken,
    IReadOnlyList<AddedToken> AddedTokens, string? ChatTemplateSource)
{
    public IEnumerable<string?> NamedTokens => [BosToken, EosToken, PadToken, UnkToken];

    public bool? AddBosToken { get; init; }
    public bool? AddEosToken { get; init; }
    /// <summary>Llama's <c>legacy</c> (default true): how transformers converts a tokenizer.model (see SentencePieceConverter).</summary>
    public bool? Legacy { get; init; }
    public bool? AddPrefixSpace { get; init; }
    public string? TokenizerClass { get; init; }
    public IReadOnlyList<string> AdditionalSpecialTokens { get; init; } = [];

    /// <summary>
    /// The tokenizer classes whose fast version rebuilds its post-processor from add_bos_token/add_eos_token
    /// (transformers' update_post_processor); others ignore the two flags.
    /// </summary>
    public bool HonoursAddBosEos => TokenizerClass?.Replace("Fast", "", StringComparison.Ordinal) is "LlamaTokenizer" or "CodeLlamaTokenizer"
        or "GemmaTokenizer" or "CohereTokenizer";

    public static TokenizerConfig? Read(string path)
    {
        if (!File.Exists(path)) return null;
        using var document = TokenizerJson.ReadDocument(path);
        var root = document.RootElement;
        if (root.ValueKind != JsonValueKind.Object) throw new TianGongException($"{path}: the top level is not a JSON object");
        return new TokenizerConfig(path, Token(root, "bos_token", path), Token(root, "eos_token", path), Token(root, "pad_token", path),
            Token(root, "unk_token", path), ReadAddedTokens(root, path), Template(root, path))
        {
            AddBosToken = Flag(root, "add_bos_token"),
            AddEosToken = Flag(root, "add_eos_token"),
            Legacy = Flag(root, "legacy"),
            AddPrefixSpace = Flag(root, "add_prefix_space"),
            TokenizerClass = root.TryGetProperty("tokenizer_class", out var c) && c.ValueKind == JsonValueKind.String ? c.GetString() : null,
            AdditionalSpecialTokens = root.TryGetProperty("additional_special_tokens", out var extra) && extra.ValueKind == JsonValueKind.Array
                ? [.. extra.EnumerateArray().Select(t => t.ValueKind == JsonValueKind.String ? t.GetString()
                    : t.ValueKind == JsonValueKind.Object && t.TryGetProperty("content", out var content) ? content.GetString() : null).OfType<string>()]
                : [],
        };
    }

    private static bool? Flag(JsonElement root, string name) =>
        root.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : null;

    /// <summary>A special token written as a string or as an AddedToken object ({"content": ..., "__type": "AddedToken"}).</summary>
    private static string? Token(JsonElement root, string name, string path)
    {
        if (!root.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null) return null;
        if (value.ValueKind == JsonValueKind.String) return value.GetString();
        if (value.ValueKind == JsonValueKind.Object && value.TryGetProperty("content", out var content) && content.ValueKind == JsonValueKind.String)
            return content.GetString();
        throw new TianGongException($"{path}: `{name}` is {value.GetRawText()}; expected a string or an object with a string `content`");
    }

    private static List<AddedToken> ReadAddedTokens(JsonElement root, string path)
    {
        var result = new List<AddedToken>();
        if (!root.TryGetProperty("added_tokens_decoder", out var decoder) || decoder.ValueKind == JsonValueKind.Null) return result;
        if (decoder.ValueKind != JsonValueKind.Object) throw new TianGongException($"{path}: `added_tokens_decoder` is not an object of id → token");
        foreach (var entry in decoder.EnumerateObject())
        {
            if (!int.TryParse(entry.Name, out int id) || id < 0 || entry.Value.ValueKind != JsonValueKind.Object
                || !entry.Value.TryGetProperty("content", out var content) || content.ValueKind != JsonValueKind.String)
                throw new TianGongException($"{path}: `added_tokens_decoder[\"{entry.Name}\"]` needs a non-negative integer key and a string `content`");
            bool Is(string name, bool absent) => entry.Value.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : absent;
            bool special = Is("special", true);
            result.Add(new AddedToken(id, content.GetString()!, special, Is("single_word", false), Is("lstrip", false), Is("rstrip", false), Is("normalized", !special)));
        }
        return result;
    }

    /// <summary>`chat_template` as a string, or the entry named "default" of a list of {name, template}.</summary>
    private static string? Template(JsonElement root, string path)
    {
        if (!root.TryGetProperty("chat_template", out var value) || value.ValueKind == JsonValueKind.Null) return null;
        if (value.ValueKind == JsonValueKind.String) return value.GetString();
        if (value.ValueKind == JsonValueKind.Array)
        {
            foreach (var entry in value.EnumerateArray())
            {
                if (entry.ValueKind == JsonValueKind.Object && entry.TryGetProperty("name", out var name) && name.GetString() == "default"
                    && entry.TryGetProperty("template", out var template) && template.ValueKind == JsonValueKind.String)
                    return template.GetString();
            }
            throw new TianGongException($"{path}: `chat_template` is a list without a {{\"name\": \"default\", \"template\": ...}} entry");
        }
        throw new TianGongException($"{path}: `chat_template` is {value.ValueKind}; expected a string or a list of {{name, template}}");
    }
}
