namespace TianGong.Tokenizers;

/// <summary>
/// What generation, scoring and serving need from a tokenizer, whatever its file format
/// (see <see cref="TokenizerLoader"/>).
/// </summary>
public interface ITextTokenizer
{
    /// <summary>Number of ids (highest id + 1).</summary>
    int VocabSize { get; }

    /// <summary>Beginning-of-sequence id; -1 when the tokenizer has none (ids are ints everywhere else, so no nullable).</summary>
    int BosId { get; }

    /// <summary>End-of-sequence id (generation stops on it); -1 when the tokenizer has none.</summary>
    int EosId { get; }

    /// <summary>Padding id; -1 when the tokenizer has none.</summary>
    int PadId { get; }

    /// <summary>Contents of the special tokens (skipped by <c>Decode(ids, skipSpecialTokens: true)</c>), by ascending id.</summary>
    IReadOnlyList<string> SpecialTokens { get; }

    /// <summary>The id of a vocabulary token as the file spells it, or of a special/added token's content; null when absent.</summary>
    int? TokenToId(string token);

    /// <summary>
    /// Encodes text as it is: special-token strings in it (e.g. from a rendered chat template) become their ids,
    /// but the post-processor's tokens (BERT's [CLS]/[SEP], Llama's bos) are not added, as HF's
    /// <c>add_special_tokens=False</c>. Chat templates write bos as text, so adding it here would double it.
    /// </summary>
    int[] Encode(string text);

    /// <summary>
    /// Encodes as transformers' <c>tokenizer(text, add_special_tokens=...)</c>: with true, the post-processor's tokens
    /// (bos, [CLS]/[SEP]) are added as the tokenizer.json and tokenizer_config.json say; with false, as <see cref="Encode(string)"/>.
    /// </summary>
    int[] Encode(string text, bool addSpecialTokens);

    string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false);

    /// <summary>
    /// The raw bytes token <paramref name="id"/> stands for (may be partial UTF-8; a special token's UTF-8 content).
    /// Concatenating them gives the decoded bytes, which constrained decoding relies on.
    /// </summary>
    byte[] TokenBytes(int id);

    /// <summary>
    /// Whether <paramref name="id"/> is a byte-fallback token (&lt;0xAB&gt;, SentencePiece's byte_fallback): HF decodes a run of
    /// them as a whole, so text decoded up to one may still change with the next (an invalid byte makes the run U+FFFD).
    /// Incremental detokenization waits for the run to end.
    /// </summary>
    bool IsByteFallback(int id) => false;

    /// <summary>How to turn chat messages into a prompt; null for tokenizers of models that do not chat (BERT).</summary>
    ChatTemplate? ChatTemplate { get; }
}
