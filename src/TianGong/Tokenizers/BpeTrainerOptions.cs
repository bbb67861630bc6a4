namespace TianGong.Tokenizers;

/// <summary>
/// Settings for <see cref="ByteLevelBpeTrainer"/>. <paramref name="VocabSize"/> counts special tokens,
/// the 256 byte tokens and the merged tokens. Merging stops early when the most frequent pair occurs
/// fewer than <paramref name="MinFrequency"/> times.
/// </summary>
public sealed record BpeTrainerOptions(int VocabSize, int MinFrequency = 2)
{
    public const string EndOfText = "<|endoftext|>";

    /// <summary>
    /// Added tokens, given ids 0.. in this order. The tokenizer uses <c>&lt;|endoftext|&gt;</c> as bos, eos and pad
    /// when present, otherwise the first entry here.
    /// </summary>
    public IReadOnlyList<string> SpecialTokens { get; init; } = [EndOfText, "<|im_start|>", "<|im_end|>"];

    internal void Validate()
    {
        if (MinFrequency < 1)
            throw new ArgumentOutOfRangeException(nameof(MinFrequency), MinFrequency, "MinFrequency must be at least 1.");
        if (SpecialTokens.Any(string.IsNullOrEmpty))
            throw new ArgumentException("Special tokens must be non-empty strings.", nameof(SpecialTokens));
        if (SpecialTokens.Distinct(StringComparer.Ordinal).Count() != SpecialTokens.Count)
            throw new ArgumentException("Special tokens must be distinct.", nameof(SpecialTokens));
        int minimum = SpecialTokens.Count + 256;
        if (VocabSize < minimum)
            throw new ArgumentOutOfRangeException(nameof(VocabSize), VocabSize,
                $"VocabSize must be at least {minimum} ({SpecialTokens.Count} special tokens + 256 byte tokens).");
    }
}
