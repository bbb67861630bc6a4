using System.Text;
using System.Text.Json;
using Microsoft.ML.Tokenizers;

namespace TianGong.Tokenizers;

/// <summary>
/// A BERT tokenizer.json (model WordPiece, BertNormalizer, BertPreTokenizer), run by Microsoft.ML.Tokenizers'
/// BertTokenizer. Encode does not add [CLS]/[SEP] (see <see cref="ITextTokenizer.Encode"/>); BosId and EosId are
/// [CLS] and [SEP], which a caller wraps around a sequence as the TemplateProcessing post-processor does.
/// </summary>
internal static class WordPieceJson
{
    public static LibraryTokenizer Load(JsonElement root, string path)
    {
        try
        {
            return Parse(root, path);
        }
        catch (FormatException e)
        {
            throw new TianGongException($"{path}: {e.Message}", e);
        }
    }

    private static LibraryTokenizer Parse(JsonElement root, string path)
    {
        var model = root.GetProperty("model");
        var normalizer = Section(root, "normalizer", "BertNormalizer");
        Section(root, "pre_tokenizer", "BertPreTokenizer");
        bool lowercase = Flag(normalizer, "lowercase", true);
        // HF: strip_accents null means "as lowercase".
        bool stripAccents = normalizer.TryGetProperty("strip_accents", out var sa) && sa.ValueKind != JsonValueKind.Null
            ? sa.ValueKind == JsonValueKind.True : lowercase;
        if (!Flag(normalizer, "clean_text", true))
            throw new FormatException("`normalizer.clean_text` is false; only true is supported");

        if (!model.TryGetProperty("vocab", out var vocabJson) || vocabJson.ValueKind != JsonValueKind.Object)
            throw new FormatException("missing `model.vocab` object");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var entry in vocabJson.EnumerateObject())
        {
            if (!entry.Value.TryGetInt32(out int id) || id < 0)
                throw new FormatException($"`model.vocab` entry `{entry.Name}` has id {entry.Value}; ids must be non-negative integers");
            if (entry.Name.Contains('\n') || entry.Name.Contains('\r'))
                throw new FormatException($"`model.vocab` token with id {id} holds a line break, which a WordPiece vocabulary cannot");
            vocab[entry.Name] = id;
        }
        // BertTokenizer reads vocab.txt, where the line number is the id, so ids must be exactly 0..n-1.
        var byId = new string?[vocab.Count];
        foreach (var (token, id) in vocab)
        {
            if (id >= byId.Length || byId[id] is not null)
                throw new FormatException($"`model.vocab` ids must be 0..{vocab.Count - 1} without gaps or repeats, but `{token}` has id {id}");
            byId[id] = token;
        }

        string prefix = model.TryGetProperty("continuing_subword_prefix", out var p) && p.ValueKind == JsonValueKind.String ? p.GetString()! : "##";
        string unk = model.TryGetProperty("unk_token", out var u) && u.ValueKind == JsonValueKind.String ? u.GetString()! : "[UNK]";
        int maxChars = model.TryGetProperty("max_input_chars_per_word", out var m) && m.TryGetInt32(out int mc) ? mc : 100;
        var added = ReadSpecialAddedTokens(root);

        var options = new BertOptions
        {
            LowerCaseBeforeTokenization = lowercase,
            RemoveNonSpacingMarks = stripAccents,
            IndividuallyTokenizeCjk = Flag(normalizer, "handle_chinese_chars", true),
            ApplyBasicTokenization = true,
            SplitOnSpecialTokens = true,
            UnknownToken = unk,
            ContinuingSubwordPrefix = prefix,
            MaxInputCharsPerWord = maxChars,
            SpecialTokens = added.Where(t => vocab.ContainsKey(t)).ToDictionary(t => t, t => vocab[t], StringComparer.Ordinal),
        };
        BertTokenizer bert;
        try
        {
            using var stream = new MemoryStream(Encoding.UTF8.GetBytes(string.Join('\n', byId) + "\n"));
            bert = BertTokenizer.Create(stream, options);
        }
        catch (ArgumentException e)
        {
            throw new FormatException($"Microsoft.ML.Tokenizers cannot build a BERT tokenizer from it ({e.Message})");
        }
        return LibraryTokenizer.WordPiece(bert, vocab, added, prefix, stripAccents, path);
    }

    private static JsonElement Section(JsonElement root, string name, string type)
    {
        if (!root.TryGetProperty(name, out var section) || section.ValueKind != JsonValueKind.Object
            || !section.TryGetProperty("type", out var t) || t.GetString() != type)
            throw new FormatException($"unsupported `{name}` for a WordPiece model; only {type} is supported");
        return section;
    }

    private static bool Flag(JsonElement section, string name, bool absent) =>
        section.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : absent;

    private static List<string> ReadSpecialAddedTokens(JsonElement root)
    {
        var result = new List<string>();
        if (!root.TryGetProperty("added_tokens", out var added) || added.ValueKind != JsonValueKind.Array) return result;
        foreach (var token in added.EnumerateArray())
        {
            if (token.ValueKind == JsonValueKind.Object && token.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String
                && !(token.TryGetProperty("special", out var s) && s.ValueKind == JsonValueKind.False))
                result.Add(c.GetString()!);
        }
        return result;
    }
}
