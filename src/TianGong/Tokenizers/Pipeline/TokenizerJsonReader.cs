using System.Globalization;
using System.Text;
using System.Text.Json;

namespace TianGong.Tokenizers;

/// <summary>The components of a tokenizer.json, each read by <see cref="TokenizerJsonReader"/>.</summary>
internal sealed record TokenizerPipelineParts(INormalizer? Normalizer, IPreTokenizer? PreTokenizer, ITokenizerModel Model,
    IPostProcessor? PostProcessor, IDecoder? Decoder, IReadOnlyList<AddedToken> AddedTokens);

/// <summary>
/// Reads every component of Hugging Face tokenizers 0.22's tokenizer.json. An unknown component type, or a field of the
/// wrong shape, is an error naming it and its JSON path (e.g. <c>pre_tokenizer.pretokenizers[1].type</c>).
/// </summary>
internal sealed class TokenizerJsonReader(string file)
{
    public static TokenizerPipelineParts Read(string path)
    {
        using var document = TokenizerJson.ReadDocument(path);
        return new TokenizerJsonReader(path).Parts(document.RootElement);
    }

    public TokenizerPipelineParts Parts(JsonElement root)
    {
        if (root.ValueKind != JsonValueKind.Object) throw Error("", "the top level is not a JSON object");
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object) throw Error("model", "is missing or not an object");
        var normalizer = Optional(root, "normalizer", Normalizer);
        var preTokenizer = Optional(root, "pre_tokenizer", PreTokenizer);
        var tokenModel = Model(model, "model");
        var added = AddedTokens(root);
        // A template may name special tokens without listing their ids; they are then looked up as HF's builder does.
        tokenId = token => added.FirstOrDefault(t => t.Content == token)?.Id ?? tokenModel.TokenToId(token);
        return new TokenizerPipelineParts(normalizer, preTokenizer, tokenModel, Optional(root, "post_processor", PostProcessor),
            Optional(root, "decoder", Decoder), added);
    }

    private Func<string, int?> tokenId = _ => null;

    private TianGongException Error(string path, string message) => new($"{file}: `{path}` {message}");

    private static T? Optional<T>(JsonElement root, string name, Func<JsonElement, string, T> read) where T : class =>
        root.TryGetProperty(name, out var e) && e.ValueKind != JsonValueKind.Null ? read(e, name) : null;

    private string Type(JsonElement e, string path)
    {
        if (e.ValueKind != JsonValueKind.Object) throw Error(path, $"is {e.ValueKind}; expected an object with a `type`");
        return e.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()! : throw Error(path + ".type", "is missing");
    }

    private TianGongException Unknown(string kind, string type, string path, string known) =>
        Error(path + ".type", $"is `{type}`, a {kind} TianGong does not know (known: {known})");

    private string? String(JsonElement e, string name, string path, string? absent = null)
    {
        if (!e.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return absent;
        return v.ValueKind == JsonValueKind.String ? v.GetString() : throw Error($"{path}.{name}", $"is {v.GetRawText()}; expected a string");
    }

    private bool Bool(JsonElement e, string name, string path, bool absent)
    {
        if (!e.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return absent;
        return v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : throw Error($"{path}.{name}", $"is {v.GetRawText()}; expected true or false");
    }

    private int Int(JsonElement e, string name, string path, int absent)
    {
        if (!e.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return absent;
        return v.TryGetInt32(out int i) ? i : throw Error($"{path}.{name}", $"is {v.GetRawText()}; expected an integer");
    }

    private JsonElement Array(JsonElement e, string name, string path)
    {
        if (!e.TryGetProperty(name, out var v) || v.ValueKind != JsonValueKind.Array) throw Error($"{path}.{name}", "is missing or not an array");
        return v;
    }

    private List<T> Each<T>(JsonElement e, string name, string path, Func<JsonElement, string, T> read)
    {
        var result = new List<T>();
        int i = 0;
        foreach (var item in Array(e, name, path).EnumerateArray()) result.Add(read(item, $"{path}.{name}[{i++}]"));
        return result;
    }

    /// <summary>A <c>{"String": ...}</c> or <c>{"Regex": ...}</c> pattern.</summary>
    private CodePointRegex Pattern(JsonElement e, string path)
    {
        if (!e.TryGetProperty("pattern", out var p) || p.ValueKind != JsonValueKind.Object) throw Error(path + ".pattern", "is missing or not an object");
        if (p.TryGetProperty("String", out var s) && s.ValueKind == JsonValueKind.String) return CodePointRegex.ForLiteral(s.GetString()!, $"{file}: `{path}.pattern`");
        if (p.TryGetProperty("Regex", out var r) && r.ValueKind == JsonValueKind.String) return new CodePointRegex(r.GetString()!, $"{file}: `{path}.pattern`");
        throw Error(path + ".pattern", $"is {p.GetRawText()}; expected {{\"String\": ...}} or {{\"Regex\": ...}}");
    }

    private Rune SingleChar(string? s, string path) =>
        s is not null && Rune.DecodeFromUtf16(s, out var r, out int n) == System.Buffers.OperationStatus.Done && n == s.Length
            ? r : throw Error(path, $"is `{s}`; expected exactly one character");

    private INormalizer Normalizer(JsonElement e, string path) => Type(e, path) switch
    {
        "Sequence" => new SequenceNormalizer(Each(e, "normalizers", path, Normalizer)),
        "NFC" => new UnicodeNormalizer(NormalizationForm.FormC),
        "NFD" => new UnicodeNormalizer(NormalizationForm.FormD),
        "NFKC" => new UnicodeNormalizer(NormalizationForm.FormKC),
        "NFKD" => new UnicodeNormalizer(NormalizationForm.FormKD),
        "Lowercase" => new LowercaseNormalizer(),
        "Strip" => new StripNormalizer(Bool(e, "strip_left", path, true), Bool(e, "strip_right", path, true)),
        "StripAccents" => new StripAccentsNormalizer(),
        "Replace" => new ReplaceNormalizer(Pattern(e, path), String(e, "content", path) ?? throw Error(path + ".content", "is missing")),
        "Prepend" => new PrependNormalizer(String(e, "prepend", path) ?? throw Error(path + ".prepend", "is missing")),
        "ByteLevel" => new ByteLevelNormalizer(),
        "BertNormalizer" => BertNormalizer(e, path),
        "Precompiled" => PrecompiledNormalizer.FromBase64(String(e, "precompiled_charsmap", path), $"{file}: `{path}.precompiled_charsmap`"),
        var other => throw Unknown("normalizer", other, path,
            "Sequence, NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents, Replace, Prepend, ByteLevel, BertNormalizer, Precompiled"),
    };

    private BertNormalizer BertNormalizer(JsonElement e, string path)
    {
        bool lowercase = Bool(e, "lowercase", path, true);
        // strip_accents null means "as lowercase".
        return new BertNormalizer(Bool(e, "clean_text", path, true), Bool(e, "handle_chinese_chars", path, true),
            Bool(e, "strip_accents", path, lowercase), lowercase);
    }

    private IPreTokenizer PreTokenizer(JsonElement e, string path) => Type(e, path) switch
    {
        "Sequence" => new SequencePreTokenizer(Each(e, "pretokenizers", path, PreTokenizer)),
        "ByteLevel" => new ByteLevelPreTokenizer(Bool(e, "add_prefix_space", path, true), Bool(e, "use_regex", path, true)),
        "Split" => new SplitPreTokenizer(Pattern(e, path), Splitting.ParseBehavior(String(e, "behavior", path), $"{file}: `{path}.behavior`"),
            Bool(e, "invert", path, false)),
        "Whitespace" => new WhitespacePreTokenizer(),
        "WhitespaceSplit" => new WhitespaceSplitPreTokenizer(),
        "BertPreTokenizer" => new BertPreTokenizer(),
        "Metaspace" => new MetaspacePreTokenizer(SingleChar(String(e, "replacement", path, "\u2581"), path + ".replacement"),
            Prepend(e, path), Bool(e, "split", path, true)),
        "Punctuation" => new PunctuationPreTokenizer(Splitting.ParseBehavior(String(e, "behavior", path, "Isolated"), $"{file}: `{path}.behavior`")),
        "Digits" => new DigitsPreTokenizer(Bool(e, "individual_digits", path, false)),
        "CharDelimiterSplit" => new CharDelimiterSplitPreTokenizer(SingleChar(String(e, "delimiter", path), path + ".delimiter")),
        "UnicodeScripts" => new UnicodeScriptsPreTokenizer(),
        var other => throw Unknown("pre-tokenizer", other, path,
            "Sequence, ByteLevel, Split, Whitespace, WhitespaceSplit, BertPreTokenizer, Metaspace, Punctuation, Digits, CharDelimiterSplit, UnicodeScripts"),
    };

    /// <summary>Metaspace's <c>prepend_scheme</c>, or the older <c>add_prefix_space</c> (true: always).</summary>
    private PrependScheme Prepend(JsonElement e, string path) => String(e, "prepend_scheme", path) switch
    {
        "always" => PrependScheme.Always,
        "first" => PrependScheme.First,
        "never" => PrependScheme.Never,
        null => Bool(e, "add_prefix_space", path, true) ? PrependScheme.Always : PrependScheme.Never,
        var other => throw Error(path + ".prepend_scheme", $"is `{other}`; expected always, first or never"),
    };

    private ITokenizerModel Model(JsonElement e, string path)
    {
        string type = e.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()!
            // Files without a type (older ones, ours before we wrote it): HF tells the model by its fields.
            : e.TryGetProperty("merges", out _) ? "BPE"
            : e.TryGetProperty("vocab", out var v) && v.ValueKind == JsonValueKind.Array ? "Unigram"
            : e.TryGetProperty("max_input_chars_per_word", out _) ? "WordPiece" : "WordLevel";
        string where = $"{file}: `{path}";
        switch (type)
        {
            case "BPE":
                if (e.TryGetProperty("dropout", out var d) && d.ValueKind == JsonValueKind.Number && d.GetDouble() > 0)
                    throw Error(path + ".dropout", $"is {d.GetDouble()}; BPE dropout makes encoding random, which TianGong does not do");
                return new BpeModel(Vocab(e, path), Merges(e, path), String(e, "unk_token", path), String(e, "continuing_subword_prefix", path),
                    String(e, "end_of_word_suffix", path), Bool(e, "fuse_unk", path, false), Bool(e, "byte_fallback", path, false),
                    Bool(e, "ignore_merges", path, false), where + "`");
            case "WordPiece":
                return new WordPieceModel(Vocab(e, path), String(e, "unk_token", path, "[UNK]")!, String(e, "continuing_subword_prefix", path, "##")!,
                    Int(e, "max_input_chars_per_word", path, 100), where);
            case "WordLevel":
                return new WordLevelModel(Vocab(e, path), String(e, "unk_token", path, "<unk>")!, where + "`");
            case "Unigram":
                var pieces = new List<(string, double)>();
                int i = 0;
                foreach (var entry in Array(e, "vocab", path).EnumerateArray())
                {
                    if (entry.ValueKind != JsonValueKind.Array || entry.GetArrayLength() != 2 || entry[0].ValueKind != JsonValueKind.String
                        || entry[1].ValueKind != JsonValueKind.Number)
                        throw Error($"{path}.vocab[{i}]", $"is {entry.GetRawText()}; expected [piece, score]");
                    pieces.Add((entry[0].GetString()!, entry[1].GetDouble()));
                    i++;
                }
                int? unkId = e.TryGetProperty("unk_id", out var u) && u.ValueKind == JsonValueKind.Number ? u.GetInt32() : null;
                return new UnigramModel(pieces, unkId, Bool(e, "byte_fallback", path, false), where + "`");
            default:
                throw Unknown("model", type, path, "BPE, WordPiece, WordLevel, Unigram");
        }
    }

    /// <summary>
    /// Token ids are array indices here (and in every runtime): a hostile id of 2^31−1 would allocate gigabytes.
    /// 2^22 is sixteen times the largest published vocabulary (Gemma's 262,144).
    /// </summary>
    public const int MaxTokenId = (1 << 22) - 1;

    private Dictionary<string, int> Vocab(JsonElement e, string path)
    {
        if (!e.TryGetProperty("vocab", out var v) || v.ValueKind != JsonValueKind.Object) throw Error(path + ".vocab", "is missing or not an object of token → id");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var entry in v.EnumerateObject())
        {
            if (!entry.Value.TryGetInt32(out int id) || id < 0 || id > MaxTokenId)
                throw Error($"{path}.vocab[\"{entry.Name}\"]", $"is {entry.Value.GetRawText()}; ids are integers from 0 to {MaxTokenId}");
            vocab[entry.Name] = id;
        }
        return vocab;
    }

    private List<(string, string)> Merges(JsonElement e, string path)
    {
        var result = new List<(string, string)>();
        if (!e.TryGetProperty("merges", out var merges) || merges.ValueKind == JsonValueKind.Null) return result;
        int i = 0;
        foreach (var merge in Array(e, "merges", path).EnumerateArray())
        {
            // tokenizers >= 0.20 writes ["a", "b"]; older files "a b".
            if (merge.ValueKind == JsonValueKind.String && merge.GetString()!.Split(' ') is [var l, var r]) result.Add((l, r));
            else if (merge.ValueKind == JsonValueKind.Array && merge.GetArrayLength() == 2 && merge[0].ValueKind == JsonValueKind.String
                     && merge[1].ValueKind == JsonValueKind.String)
                result.Add((merge[0].GetString()!, merge[1].GetString()!));
            else throw Error($"{path}.merges[{i}]", $"is {merge.GetRawText()}; expected \"a b\" or [\"a\", \"b\"]");
            i++;
        }
        return result;
    }

    private IPostProcessor PostProcessor(JsonElement e, string path) => Type(e, path) switch
    {
        "Sequence" => new SequenceProcessor(Each(e, "processors", path, PostProcessor)),
        "ByteLevel" => new ByteLevelProcessor(Bool(e, "trim_offsets", path, true), Bool(e, "add_prefix_space", path, true)),
        "TemplateProcessing" => Template(e, path),
        "BertProcessing" => new BertProcessor(SpecialPair(e, "cls", path), SpecialPair(e, "sep", path)),
        "RobertaProcessing" => new RobertaProcessor(SpecialPair(e, "cls", path), SpecialPair(e, "sep", path),
            Bool(e, "trim_offsets", path, true), Bool(e, "add_prefix_space", path, true)),
        var other => throw Unknown("post-processor", other, path, "Sequence, ByteLevel, TemplateProcessing, BertProcessing, RobertaProcessing"),
    };

    private TemplatePiece.Special SpecialPair(JsonElement e, string name, string path)
    {
        if (!e.TryGetProperty(name, out var pair) || pair.ValueKind != JsonValueKind.Array || pair.GetArrayLength() != 2
            || pair[0].ValueKind != JsonValueKind.String || !pair[1].TryGetInt32(out int id))
            throw Error($"{path}.{name}", "is not [token, id]");
        return new TemplatePiece.Special([id], [pair[0].GetString()!]);
    }

    private TemplateProcessor Template(JsonElement e, string path)
    {
        var specials = e.TryGetProperty("special_tokens", out var st) && st.ValueKind == JsonValueKind.Object ? st : default;
        bool hasPair = e.TryGetProperty("pair", out var p) && p.ValueKind != JsonValueKind.Null;
        return new TemplateProcessor(Pieces("single"), hasPair ? Pieces("pair") : null);

        List<TemplatePiece> Pieces(string name)
        {
            var pieces = new List<TemplatePiece>();
            int i = 0;
            foreach (var piece in Array(e, name, path).EnumerateArray())
            {
                string where = $"{path}.{name}[{i++}]";
                if (piece.ValueKind == JsonValueKind.Object && piece.TryGetProperty("Sequence", out var sequence) && sequence.ValueKind == JsonValueKind.Object)
                {
                    bool isB = String(sequence, "id", where + ".Sequence", "A") switch
                    {
                        "A" => false,
                        "B" => true,
                        var other => throw Error(where + ".Sequence.id", $"is `{other}`; expected A or B"),
                    };
                    pieces.Add(new TemplatePiece.Sequence(isB) { TypeId = Int(sequence, "type_id", where + ".Sequence", 0) });
                    continue;
                }
                if (piece.ValueKind != JsonValueKind.Object || !piece.TryGetProperty("SpecialToken", out var special) || String(special, "id", where) is not { } token)
                    throw Error(where, $"is {piece.GetRawText()}; expected {{\"SpecialToken\": {{\"id\": ...}}}} or {{\"Sequence\": ...}}");
                List<int> ids;
                List<string> tokens;
                if (specials.ValueKind == JsonValueKind.Object && specials.TryGetProperty(token, out var entry) && entry.ValueKind == JsonValueKind.Object)
                {
                    ids = Each(entry, "ids", $"{path}.special_tokens[\"{token}\"]", (x, q) => x.TryGetInt32(out int v) ? v : throw Error(q, "is not an integer id"));
                    tokens = Each(entry, "tokens", $"{path}.special_tokens[\"{token}\"]", (x, q) => x.ValueKind == JsonValueKind.String ? x.GetString()! : throw Error(q, "is not a string"));
                    if (ids.Count != tokens.Count) throw Error($"{path}.special_tokens[\"{token}\"]", "has different numbers of ids and tokens");
                }
                else
                {
                    ids = [tokenId(token) ?? throw Error(where, $"names the special token `{token}`, which is neither in `{path}.special_tokens` nor in the vocabulary")];
                    tokens = [token];
                }
                pieces.Add(new TemplatePiece.Special(ids, tokens) { TypeId = Int(special, "type_id", where + ".SpecialToken", 0) });
            }
            return pieces;
        }
    }

    private IDecoder Decoder(JsonElement e, string path) => Type(e, path) switch
    {
        "Sequence" => new SequenceDecoder(Each(e, "decoders", path, Decoder)),
        "ByteLevel" => new ByteLevelDecoder(),
        "Metaspace" => new MetaspaceDecoder((char)SingleChar(String(e, "replacement", path, "\u2581"), path + ".replacement").Value, Prepend(e, path)),
        "WordPiece" => new WordPieceDecoder(String(e, "prefix", path, "##")!, Bool(e, "cleanup", path, true)),
        "BPEDecoder" => new BpeDecoder(String(e, "suffix", path, "</w>")!),
        "ByteFallback" => new ByteFallbackDecoder(),
        "Fuse" => new FuseDecoder(),
        "Strip" => new StripDecoder(String(e, "content", path, " ")![0], Int(e, "start", path, 0), Int(e, "stop", path, 0)),
        "Replace" => new ReplaceDecoder(Pattern(e, path), String(e, "content", path) ?? throw Error(path + ".content", "is missing")),
        "CTC" => new CtcDecoder(String(e, "pad_token", path, "<pad>")!, String(e, "word_delimiter_token", path, "|")!, Bool(e, "cleanup", path, true)),
        var other => throw Unknown("decoder", other, path, "Sequence, ByteLevel, Metaspace, WordPiece, BPEDecoder, ByteFallback, Fuse, Strip, Replace, CTC"),
    };

    private List<AddedToken> AddedTokens(JsonElement root)
    {
        var result = new List<AddedToken>();
        if (!root.TryGetProperty("added_tokens", out var added) || added.ValueKind == JsonValueKind.Null) return result;
        int i = 0;
        foreach (var token in Array(root, "added_tokens", "").EnumerateArray())
        {
            string path = $"added_tokens[{i++}]";
            if (token.ValueKind != JsonValueKind.Object || Int(token, "id", path, -1) is var id && (id < 0 || id > MaxTokenId) || String(token, "content", path) is not { Length: > 0 } content)
                throw Error(path, $"needs an integer `id` from 0 to {MaxTokenId} and a non-empty string `content`");
            bool special = Bool(token, "special", path, true);
            result.Add(new AddedToken(id, content, special, Bool(token, "single_word", path, false), Bool(token, "lstrip", path, false),
                Bool(token, "rstrip", path, false), Bool(token, "normalized", path, !special)));
        }
        return result;
    }
}
