using System.Text.Encodings.Web;
using System.Text.Json;

namespace TianGong.Tokenizers;

/// <summary>What a byte-level BPE tokenizer.json holds that we use.</summary>
internal sealed record TokenizerJsonData(
    IReadOnlyDictionary<string, int> Vocab,
    IReadOnlyList<(string Left, string Right)> Merges,
    IReadOnlyList<AddedToken> AddedTokens);

/// <summary>Reads and writes Hugging Face tokenizer.json for a GPT-2-style byte-level BPE.</summary>
internal static class TokenizerJson
{
    public static TokenizerJsonData Read(string path)
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(File.ReadAllBytes(path));
        }
        catch (JsonException e)
        {
            throw new TianGongException($"{path}: not valid JSON ({e.Message})", e);
        }
        using (document)
        {
            try
            {
                return Parse(document.RootElement);
            }
            catch (FormatException e)
            {
                throw new TianGongException($"{path}: {e.Message}", e);
            }
        }
    }

    private static TokenizerJsonData Parse(JsonElement root)
    {
        if (root.ValueKind != JsonValueKind.Object) throw new FormatException("the top level is not a JSON object");
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            throw new FormatException("missing `model` object");
        if (model.TryGetProperty("type", out var type) && type.GetString() != "BPE")
            throw new FormatException($"unsupported model type `{type}` in `model.type`; only BPE is supported");
        CheckNullOrType(root, "normalizer", null);
        CheckNullOrType(root, "pre_tokenizer", "ByteLevel");
        if (root.TryGetProperty("pre_tokenizer", out var pre) && pre.ValueKind == JsonValueKind.Object
            && pre.TryGetProperty("add_prefix_space", out var prefix) && prefix.ValueKind == JsonValueKind.True)
            throw new FormatException("`pre_tokenizer.add_prefix_space` is true; only false is supported");

        return new TokenizerJsonData(ReadVocab(model), ReadMerges(model), ReadAddedTokens(root));
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
        string fullPath = Path.GetFullPath(path);
        string temp = Path.Combine(Path.GetDirectoryName(fullPath)!, $".{Path.GetFileName(fullPath)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write))
            using (var json = new Utf8JsonWriter(stream, new JsonWriterOptions
                   {
                       Indented = true,
                       Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
                   }))
            {
                WriteDocument(json, vocabById, merges, addedTokens);
            }
            File.Move(temp, fullPath, overwrite: true);
        }
        catch
        {
            File.Delete(temp);
            throw;
        }
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
