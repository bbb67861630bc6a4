namespace TianGong.Tokenizers;

/// <summary>
/// An entry of tokenizer.json's <c>added_tokens</c>: matched in the text before pre-tokenization and never split.
/// <c>SingleWord</c>: only where no word char touches it; <c>LStrip</c>/<c>RStrip</c>: it swallows the whitespace on
/// that side; <c>Normalized</c>: matched in the normalized text (else in the original).
/// </summary>
public sealed record AddedToken(int Id, string Content, bool Special = true, bool SingleWord = false, bool LStrip = false,
    bool RStrip = false, bool Normalized = false);
