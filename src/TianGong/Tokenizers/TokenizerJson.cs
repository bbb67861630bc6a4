using System.Text.Encodings.Web;
using System.Text.Json;

namespace TianGong.Tokenizers;

/// <summary>What a byte-level BPE tokenizer.json holds that we use.</summary>
/// <param name="SplitPattern">The regex of a <c>Split</c> pre-tokenizer before ByteLevel(use_regex: false) (Llama 3, Qwen2); null for GPT-2's.</param>
/// <param name="Nfc">The normalizer is NFC.</param>
/// <param name="IgnoreMerges">A piece that is itself in the vocabulary is one token, merges or not (<c>model.ignore_merges</c>).</param>
internal sealed record TokenizerJsonData(
    IReadOnlyDictionary<string, int> Vocab,
    IReadOnlyList<(string Left, string Right)> Merges,
    IReadOnlyList<AddedToken> AddedTokens,
    string? SplitPattern = null,
    bool Nfc = false,
    bool IgnoreMerges = false);

/// <summary>Reads and writes Hugging Face tokenizer.json for a GPT-2-style byte-level BPE.</summary>
internal static class TokenizerJson
{
    public static TokenizerJsonData Read(string path)
    {
        using var document = ReadDocument(path);
        try
        {
            return Parse(document.RootElement);
        }
        catch (FormatException e)
        {
            throw new TianGongException($"{path}: {e.Message}", e);
        }
    }

    /// <summary>Parses the file as JSON, with an error naming it when it is not.</summary>
    public static JsonDocument ReadDocument(string path)
    {
        try
        {
            return JsonDocument.Parse(File.ReadAllBytes(path));
        }
        catch (JsonException e)
        {
            throw new TianGongException($"{path}: not valid JSON ({e.Message})", e);
        }
    }

    /// <summary><c>model.type</c>, or null when the file does not say (our own files before it was written).</summary>
    public static string? ModelType(JsonElement root) =>
        root.ValueKind == JsonValueKind.Object && root.TryGetProperty("model", out var model) && model.ValueKind == JsonValueKind.Object
            && model.TryGetProperty("type", out var type) ? type.GetString() : null;

    private static TokenizerJsonData Parse(JsonElement root)
    {
        if (root.ValueKind != JsonValueKind.Object) throw new FormatException("the top level is not a JSON object");
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            throw new FormatException("missing `model` object");
        if (model.TryGetProperty("type", out var type) && type.GetString() != "BPE")
            throw new FormatException($"unsupported model type `{type}` in `model.type`; only BPE is supported");
        bool nfc = root.TryGetProperty("normalizer", out var normalizer) && normalizer.ValueKind == JsonValueKind.Object
            && normalizer.TryGetProperty("type", out var nt) && nt.GetString() == "NFC";
        if (!nfc) CheckNullOrType(root, "normalizer", null);
        string? splitPattern = ReadPreTokenizer(root);
        bool ignoreMerges = model.TryGetProperty("ignore_merges", out var im) && im.ValueKind == JsonValueKind.True;
        return new TokenizerJsonData(ReadVocab(model), ReadMerges(model), ReadAddedTokens(root), splitPattern, nfc, ignoreMerges);
    }

    /// <summary>
    /// Accepts GPT-2's ByteLevel pre-tokenizer (returns null) or Sequence[Split(Regex, Isolated), ByteLevel(use_regex: false)]
    /// as Llama 3 and Qwen2 write it (returns the regex).
    /// </summary>
    private static string? ReadPreTokenizer(JsonElement root)
    {
        if (!root.TryGetProperty("pre_tokenizer", out var pre) || pre.ValueKind != JsonValueKind.Object
            || !pre.TryGetProperty("type", out var type) || type.GetString() != "Sequence")
        {
            CheckNullOrType(root, "pre_tokenizer", "ByteLevel");
            CheckByteLevel(root.TryGetProperty("pre_tokenizer", out var p) ? p : default, "pre_tokenizer", useRegex: true);
            return null;
        }
        const string expected = "a Sequence of Split (Regex pattern, behavior Isolated, invert false) and ByteLevel (use_regex false)";
        if (!pre.TryGetProperty("pretokenizers", out var steps) || steps.ValueKind != JsonValueKind.Array || steps.GetArrayLength() != 2)
            throw new FormatException($"unsupported `pre_tokenizer`: only {expected} is supported");
        var split = steps[0];
        if (TypeOf(split) != "Split" || TypeOf(steps[1]) != "ByteLevel")
            throw new FormatException($"unsupported `pre_tokenizer` sequence [{TypeOf(split)}, {TypeOf(steps[1])}]: only {expected} is supported");
        if (!split.TryGetProperty("pattern", out var pattern) || pattern.ValueKind != JsonValueKind.Object
            || !pattern.TryGetProperty("Regex", out var regex) || regex.ValueKind != JsonValueKind.String)
            throw new FormatException("`pre_tokenizer.pretokenizers[0].pattern` is not a {\"Regex\": ...} pattern");
        if (!split.TryGetProperty("behavior", out var behavior) || behavior.GetString() != "Isolated"
            || (split.TryGetProperty("invert", out var invert) && invert.ValueKind == JsonValueKind.True))
            throw new FormatException("`pre_tokenizer.pretokenizers[0]` must have behavior Isolated and invert false");
        CheckByteLevel(steps[1], "pre_tokenizer.pretokenizers[1]", useRegex: false);
        return regex.GetString();
    }

    private static string? TypeOf(JsonElement e) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty("type", out var t) ? t.GetString() : null;

    private static void CheckByteLevel(JsonElement byteLevel, string where, bool useRegex)
    {
        if (byteLevel.ValueKind != JsonValueKind.Object) return;
        if (byteLevel.TryGetProperty("add_prefix_space", out var prefix) && prefix.ValueKind == JsonValueKind.True)
            throw new FormatException($"`{where}.add_prefix_space` is true; only false is supported");
        bool regex = !byteLevel.TryGetProperty("use_regex", out var r) || r.ValueKind != JsonValueKind.False;
        if (regex != useRegex)
            throw new FormatException($"`{where}.use_regex` is {(regex ? "true" : "false")}; only {(useRegex ? "true" : "false")} is supported here");
    }

    /// <summary>Accepts a missing or null section, or one whose type is <paramref name="allowedType"/>.</summary>
    private static void CheckNullOrType(JsonElement root, string section, string? allowedType)
    {
        if (!root.TryGetProperty(section, out var value) || value.ValueKind == JsonValueKind.Null) return;
        string? type = value.ValueKind == JsonValueKind.Object && value.TryGetProperty("type", out var t) ? t.GetString() : null;
        if (allowedType is null || type != allowedType)
            throw new FormatException($"unsupported `{section}` of type `{type ?? value.ValueKind.ToString()}`; "
                + (allowedType is null ? "it must be null" : $"only {allowedType} is supported"));
    }

    private static Dictionary<string, int> ReadVocab(JsonElement model)
    {
        if (!model.TryGetProperty("vocab", out var vocab) || vocab.ValueKind != JsonValueKind.Object)
            throw new FormatException("missing `model.vocab` object");
        var result = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var entry in vocab.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.Number || !entry.Value.TryGetInt32(out int id) || id < 0)
                throw new FormatException($"`model.vocab` entry `{entry.Name}` has id {entry.Value}; ids must be non-negative integers");
            result[entry.Name] = id;
        }
        return result;
    }

    private static List<(string, string)> ReadMerges(JsonElement model)
    {
        if (!model.TryGetProperty("merges", out var merges) || merges.ValueKind != JsonValueKind.Array)
            throw new FormatException("missing `model.merges` array");
        var result = new List<(string, string)>(merges.GetArrayLength());
        int index = 0;
        foreach (var merge in merges.EnumerateArray())
        {
            // tokenizers >= 0.20 writes ["a", "b"]; older files write "a b" (byte-level tokens hold no space).
            if (merge.ValueKind == JsonValueKind.String && merge.GetString()!.Split(' ') is [var l, var r])
                result.Add((l, r));
            else if (merge.ValueKind == JsonValueKind.Array && merge.GetArrayLength() == 2
                && merge[0].ValueKind == JsonValueKind.String && merge[1].ValueKind == JsonValueKind.String)
                result.Add((merge[0].GetString()!, merge[1].GetString()!));
            else
                throw new FormatException($"`model.merges[{index}]` is {merge.GetRawText()}; expected \"a b\" or [\"a\", \"b\"]");
            index++;
        }
        return result;
    }

    private static List<AddedToken> ReadAddedTokens(JsonElement root)
    {
        var result = new List<AddedToken>();
        if (!root.TryGetProperty("added_tokens", out var added) || added.ValueKind == JsonValueKind.Null) return result;
        if (added.ValueKind != JsonValueKind.Array) throw new FormatException("`added_tokens` is not an array");
        int index = 0;
        foreach (var token in added.EnumerateArray())
        {
            if (token.ValueKind != JsonValueKind.Object
                || !token.TryGetProperty("id", out var id) || !id.TryGetInt32(out int tokenId) || tokenId < 0
                || !token.TryGetProperty("content", out var content) || content.ValueKind != JsonValueKind.String
                || content.GetString()!.Length == 0)
                throw new FormatException($"`added_tokens[{index}]` needs a non-negative integer `id` and a non-empty string `content`");
            bool special = !token.TryGetProperty("special", out var s) || s.ValueKind != JsonValueKind.False;
            result.Add(new AddedToken(tokenId, content.GetString()!, special));
            index++;
        }
        return result;
    }

    /// <summary>Writes the file as HF tokenizers does (2-space indent, raw UTF-8), via a temp file so readers never see half of it.</summary>
    public static void Write(string path, IReadOnlyList<string?> vocabById, IReadOnlyList<(string Left, string Right)> merges,
        IReadOnlyList<AddedToken> addedTokens)
    {
        AtomicFile.Write(path, stream =>
        {
            using var json = new Utf8JsonWriter(stream, new JsonWriterOptions
            {
                Indented = true,
                Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
            });
            WriteDocument(json, vocabById, merges, addedTokens);
        });
    }

    private static void WriteDocument(Utf8JsonWriter json, IReadOnlyList<string?> vocabById,
        IReadOnlyList<(string Left, string Right)> merges, IReadOnlyList<AddedToken> addedTokens)
    {
        json.WriteStartObject();
        json.WriteString("version", "1.0");
        json.WriteNull("truncation");
        json.WriteNull("padding");
        json.WriteStartArray("added_tokens");
        foreach (var token in addedTokens)
        {
            json.WriteStartObject();
            json.WriteNumber("id", token.Id);
            json.WriteString("content", token.Content);
            json.WriteBoolean("single_word", false);
            json.WriteBoolean("lstrip", false);
            json.WriteBoolean("rstrip", false);
            json.WriteBoolean("normalized", false);
            json.WriteBoolean("special", token.Special);
            json.WriteEndObject();
        }
        json.WriteEndArray();
        json.WriteNull("normalizer");
        WriteByteLevel(json, "pre_tokenizer", addPrefixSpace: false, trimOffsets: true);
        json.WriteNull("post_processor");
        WriteByteLevel(json, "decoder", addPrefixSpace: true, trimOffsets: true);

        json.WriteStartObject("model");
        json.WriteString("type", "BPE");
        json.WriteNull("dropout");
        json.WriteNull("unk_token");
        json.WriteNull("continuing_subword_prefix");
        json.WriteNull("end_of_word_suffix");
        json.WriteBoolean("fuse_unk", false);
        json.WriteBoolean("byte_fallback", false);
        json.WriteBoolean("ignore_merges", false);
        json.WriteStartObject("vocab");
        for (int id = 0; id < vocabById.Count; id++)
        {
            if (vocabById[id] is { } token) json.WriteNumber(token, id);
        }
        json.WriteEndObject();
        json.WriteStartArray("merges");
        foreach (var (left, right) in merges)
        {
            json.WriteStartArray();
            json.WriteStringValue(left);
            json.WriteStringValue(right);
            json.WriteEndArray();
        }
        json.WriteEndArray();
        json.WriteEndObject();
        json.WriteEndObject();
    }

    // HF's ByteLevel decoder ignores add_prefix_space; it is written as HF's GPT-2 file writes it.
    private static void WriteByteLevel(Utf8JsonWriter json, string section, bool addPrefixSpace, bool trimOffsets)
    {
        json.WriteStartObject(section);
        json.WriteString("type", "ByteLevel");
        json.WriteBoolean("add_prefix_space", addPrefixSpace);
        json.WriteBoolean("trim_offsets", trimOffsets);
        json.WriteBoolean("use_regex", true);
        json.WriteEndObject();
    }
}
