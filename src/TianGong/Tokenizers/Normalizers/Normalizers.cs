using System.Globalization;
using System.Text;

namespace TianGong.Tokenizers;

/// <summary>Rewrites text before it is split (HF <c>normalizers</c>); alignments to the original are kept.</summary>
internal interface INormalizer
{
    NormalizedString Normalize(NormalizedString text);
}

/// <summary><c>Sequence</c>: each normalizer in turn (an empty one changes nothing).</summary>
internal sealed record SequenceNormalizer(IReadOnlyList<INormalizer> Normalizers) : INormalizer
{
    public NormalizedString Normalize(NormalizedString text)
    {
        foreach (var n in Normalizers) text = n.Normalize(text);
        return text;
    }
}

/// <summary>
/// <c>NFC</c>, <c>NFD</c>, <c>NFKC</c>, <c>NFKD</c> through .NET's ICU-backed <see cref="string.Normalize(NormalizationForm)"/>.
/// Each base char with the marks after it is normalized on its own so that every output char keeps the span it came
/// from; when that would differ from normalizing the whole text (rare cross-cluster compositions) the whole text is
/// normalized as one span, so the ids are always right.
/// </summary>
internal sealed record UnicodeNormalizer(NormalizationForm Form) : INormalizer
{
    public NormalizedString Normalize(NormalizedString text)
    {
        if (text.Text.IsNormalized(Form)) return text;
        string whole = text.Text.Normalize(Form);
        var builder = text.Rewrite();
        var joined = new StringBuilder(whole.Length);
        for (int start = 0; start < text.Length;)
        {
            int end = start + Rune.GetRuneAt(text.Text, start).Utf16SequenceLength;
            while (end < text.Length && ContinuesCluster(Rune.GetRuneAt(text.Text, end)))
                end += Rune.GetRuneAt(text.Text, end).Utf16SequenceLength;
            string part = text.Text[start..end].Normalize(Form);
            builder.Append(part, start, end);
            joined.Append(part);
            start = end;
        }
        return joined.Equals(whole) ? builder.Build() : text.Rewrite().Append(whole, 0, text.Length).Build();
    }

    private static bool ContinuesCluster(Rune c) =>
        Rune.GetUnicodeCategory(c) is UnicodeCategory.NonSpacingMark or UnicodeCategory.SpacingCombiningMark or UnicodeCategory.EnclosingMark
        || c.Value is >= 0x1160 and <= 0x11FF or >= 0xD7B0 and <= 0xD7FF; // Hangul medial vowels and final consonants
}

/// <summary><c>Lowercase</c>: Unicode lowercase per code point, as Rust's <c>char::to_lowercase</c> (İ becomes i + U+0307).</summary>
internal sealed class LowercaseNormalizer : INormalizer
{
    public NormalizedString Normalize(NormalizedString text) => text.MapCodePoints(Lower);

    public static string Lower(Rune c) => c.Value == 0x130 ? "i\u0307" : Rune.ToLowerInvariant(c).ToString();
}

/// <summary><c>Strip</c>: whitespace off the left and/or right end.</summary>
internal sealed record StripNormalizer(bool Left, bool Right) : INormalizer
{
    public NormalizedString Normalize(NormalizedString text)
    {
        int start = 0, end = text.Length;
        if (Left) while (start < end && char.IsWhiteSpace(text.Text[start])) start++;
        if (Right) while (end > start && char.IsWhiteSpace(text.Text[end - 1])) end--;
        return start == 0 && end == text.Length ? text : text.Slice(start, end);
    }
}

/// <summary><c>StripAccents</c>: drops nonspacing marks (meant to follow NFD).</summary>
internal sealed class StripAccentsNormalizer : INormalizer
{
    public NormalizedString Normalize(NormalizedString text) =>
        text.MapCodePoints(c => Rune.GetUnicodeCategory(c) == UnicodeCategory.NonSpacingMark ? null : c.ToString());
}

/// <summary><c>Replace</c>: every match of a string or regex becomes the content.</summary>
internal sealed record ReplaceNormalizer(CodePointRegex Pattern, string Content) : INormalizer
{
    public NormalizedString Normalize(NormalizedString text)
    {
        var matches = Pattern.Matches(text.Text);
        if (matches.Count == 0) return text;
        var builder = text.Rewrite();
        int previous = 0;
        foreach (var (start, end) in matches)
        {
            builder.Copy(previous, start);
            // As HF's replace: the new chars are insertions after the match, aligned with its last char.
            int last = char.IsLowSurrogate(text.Text[end - 1]) && end - 2 >= start ? end - 2 : end - 1;
            builder.Append(Content, last, end);
            previous = end;
        }
        return builder.Copy(previous, text.Length).Build();
    }
}

/// <summary><c>Prepend</c>: a string in front of non-empty text.</summary>
internal sealed record PrependNormalizer(string Prefix) : INormalizer
{
    public NormalizedString Normalize(NormalizedString text) => text.Prepend(Prefix);
}

/// <summary><c>ByteLevel</c> as a normalizer: each UTF-8 byte becomes its char in GPT-2's alphabet.</summary>
internal sealed class ByteLevelNormalizer : INormalizer
{
    public NormalizedString Normalize(NormalizedString text) => ByteLevelPreTokenizer.ToByteLevel(text);
}

/// <summary>
/// <c>BertNormalizer</c>: drops NUL, U+FFFD and control chars and turns whitespace into spaces (clean_text), puts spaces
/// around CJK ideographs, strips accents (NFD, then no nonspacing marks; by default when lowercasing) and lowercases.
/// </summary>
internal sealed record BertNormalizer(bool CleanText, bool HandleChineseChars, bool StripAccents, bool Lowercase) : INormalizer
{
    public NormalizedString Normalize(NormalizedString text)
    {
        if (CleanText)
            text = text.MapCodePoints(c => c.Value is 0 or 0xFFFD || IsControl(c) ? null : IsWhitespace(c) ? " " : c.ToString());
        if (HandleChineseChars)
        {
            var builder = text.Rewrite();
            for (int i = 0; i < text.Length;)
            {
                var c = Rune.GetRuneAt(text.Text, i);
                int n = c.Utf16SequenceLength;
                if (IsChineseChar(c.Value)) builder.Append(" ", i, i + n).Append(c.ToString(), i, i + n).Append(" ", i, i + n);
                else builder.Append(text.Text.AsSpan(i, n), i, i + n);
                i += n;
            }
            text = builder.Build();
        }
        if (StripAccents) text = new StripAccentsNormalizer().Normalize(new UnicodeNormalizer(NormalizationForm.FormD).Normalize(text));
        if (Lowercase) text = new LowercaseNormalizer().Normalize(text);
        return text;
    }

    private static bool IsWhitespace(Rune c) => c.Value is '\t' or '\n' or '\r' || Rune.IsWhiteSpace(c);

    private static bool IsControl(Rune c) => c.Value is not ('\t' or '\n' or '\r')
        && Rune.GetUnicodeCategory(c) is UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.OtherNotAssigned
            or UnicodeCategory.PrivateUse or UnicodeCategory.Surrogate;

    private static bool IsChineseChar(int c) => c is >= 0x4E00 and <= 0x9FFF or >= 0x3400 and <= 0x4DBF or >= 0x20000 and <= 0x2A6DF
        or >= 0x2A700 and <= 0x2B73F or >= 0x2B740 and <= 0x2B81F or >= 0x2B920 and <= 0x2CEAF or >= 0xF900 and <= 0xFAFF
        or >= 0x2F800 and <= 0x2FA1F;
}
