using System.Text;
using TianGong.Tokenizers;

namespace TianGong.Inference;

/// <summary>
/// Text of a growing list of generated ids at O(window) cost per token, vLLM's <c>detokenize_incrementally</c>: each step
/// decodes only ids[prefixOffset..] and keeps what goes beyond the decoded ids[prefixOffset..readOffset] (the prefix
/// window). Text becomes stable, and the window moves on, once it does not end in an incomplete UTF-8 character (U+FFFD)
/// or inside a run of byte-fallback tokens (HF decodes such a run as a whole, so a later invalid byte turns it all into
/// U+FFFD). Decoding a window rather than the whole list is exact because the prefix window always yields text: a
/// decoder's first-token rule (Metaspace and Strip drop the leading space, WordPiece adds none) then applies to the same
/// token in both decodes and cancels out. <see cref="Stable"/> + <see cref="Pending"/> is always the full decode of the ids,
/// which the tests check on the repository's tokenizers with random ids.
/// </summary>
public sealed class IncrementalDetokenizer
{
    private readonly ITextTokenizer tokenizer;
    private readonly bool skipSpecialTokens;
    private readonly List<int> ids = [];
    private readonly StringBuilder stable = new();
    private int prefixOffset, readOffset;
    private string prefixText = "";
    private readonly HashSet<int> skipped = [];

    public IncrementalDetokenizer(ITextTokenizer tokenizer, bool skipSpecialTokens = true)
    {
        (this.tokenizer, this.skipSpecialTokens) = (tokenizer, skipSpecialTokens);
        if (skipSpecialTokens)
            foreach (var special in tokenizer.SpecialTokens)
                if (tokenizer.TokenToId(special) is { } id) skipped.Add(id);
    }

    /// <summary>Ids seen so far.</summary>
    public int Count => ids.Count;

    /// <summary>Text that later ids can no longer change.</summary>
    public StringBuilder Stable => stable;

    /// <summary>The rest of the current full decode after <see cref="Stable"/>: an incomplete character or byte run that may still change.</summary>
    public string Pending { get; private set; } = "";

    /// <summary>Takes the next ids (usually one) and moves what became final into <see cref="Stable"/>.</summary>
    public void Add(ReadOnlySpan<int> next)
    {
        if (next.IsEmpty) return;
        foreach (int id in next) ids.Add(id);
        string newText = Decode(prefixOffset, ids.Count);
        if (!newText.StartsWith(prefixText, StringComparison.Ordinal))
        {
            // No decoder of the repository does this (the window's text only grows at its end); should one, stay exact the slow way.
            string full = Decode(0, ids.Count);
            Pending = full.Length > stable.Length ? full[stable.Length..] : "";
            return;
        }
        bool complete = newText.Length > prefixText.Length && newText[^1] != '\uFFFD' && !EndsInByteRun();
        if (!complete)
        {
            Pending = newText[prefixText.Length..];
            return;
        }
        stable.Append(newText, prefixText.Length, newText.Length - prefixText.Length);
        Pending = "";
        (prefixOffset, readOffset) = (readOffset, ids.Count);
        prefixText = Decode(prefixOffset, readOffset);
        // A window whose ids decode to nothing (skipped special tokens, a lone ▁ under Metaspace) would leave the next
        // token first in the window, where decoders treat it differently: widen it back until it yields text.
        while (prefixText.Length == 0 && prefixOffset > 0) prefixText = Decode(--prefixOffset, readOffset);
    }

    public void Add(int id) => Add([id]);

    /// <summary>Whether the last token the decoder sees (skipped special tokens do not split a run) is a byte-fallback token.</summary>
    private bool EndsInByteRun()
    {
        for (int i = ids.Count - 1; i >= prefixOffset; i--)
            if (!skipped.Contains(ids[i])) return tokenizer.IsByteFallback(ids[i]);
        return false;
    }

    private string Decode(int from, int to) =>
        from == to ? "" : tokenizer.Decode(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(ids)[from..to], skipSpecialTokens);
}
