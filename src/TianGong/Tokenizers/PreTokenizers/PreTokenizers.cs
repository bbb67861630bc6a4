using System.Globalization;
using System.Text;

namespace TianGong.Tokenizers;

/// <summary>Cuts text into the pieces a model tokenizes separately (HF <c>pre_tokenizers</c>).</summary>
internal interface IPreTokenizer
{
    void PreTokenize(PreTokenizedString text);
}

/// <summary><c>Sequence</c>: each pre-tokenizer in turn.</summary>
internal sealed record SequencePreTokenizer(IReadOnlyList<IPreTokenizer> PreTokenizers) : IPreTokenizer
{
    public void PreTokenize(PreTokenizedString text)
    {
        foreach (var p in PreTokenizers) p.PreTokenize(text);
    }
}

/// <summary><c>Split</c>: on a string or regex, with a delimiter behavior, optionally inverted (the matches are the pieces).</summary>
internal sealed record SplitPreTokenizer(CodePointRegex Pattern, SplitDelimiterBehavior Behavior, bool Invert) : IPreTokenizer
{
    public void PreTokenize(PreTokenizedString text) => text.Split((_, s) => Splitting.ByRegex(s, Pattern, Behavior, Invert));
}

/// <summary><c>Whitespace</c>: the runs of <c>\w+</c> and of <c>[^\w\s]+</c>; whitespace goes.</summary>
internal sealed class WhitespacePreTokenizer : IPreTokenizer
{
    // Oniguruma's \w is letters, marks, decimal digits and connector punctuation; .NET's \w lacks spacing marks.
    private readonly CodePointRegex words = new(@"[\p{L}\p{M}\p{Nd}\p{Pc}]+|[^\p{L}\p{M}\p{Nd}\p{Pc}\s]+", "Whitespace");

    public void PreTokenize(PreTokenizedString text) =>
        text.Split((_, s) => Splitting.ByRegex(s, words, SplitDelimiterBehavior.Removed, invert: true));
}

/// <summary><c>WhitespaceSplit</c>: on whitespace, which goes.</summary>
internal sealed class WhitespaceSplitPreTokenizer : IPreTokenizer
{
    public void PreTokenize(PreTokenizedString text) =>
        text.Split((_, s) => Splitting.ByCodePoint(s, Rune.IsWhiteSpace, SplitDelimiterBehavior.Removed));
}

/// <summary><c>BertPreTokenizer</c>: on whitespace (removed), then each punctuation char on its own.</summary>
internal sealed class BertPreTokenizer : IPreTokenizer
{
    public void PreTokenize(PreTokenizedString text)
    {
        text.Split((_, s) => Splitting.ByCodePoint(s, Rune.IsWhiteSpace, SplitDelimiterBehavior.Removed));
        text.Split((_, s) => Splitting.ByCodePoint(s, Punctuation.IsBertPunctuation, SplitDelimiterBehavior.Isolated));
    }
}

/// <summary><c>Punctuation</c>: on punctuation chars (ASCII punctuation or Unicode category P*).</summary>
internal sealed record PunctuationPreTokenizer(SplitDelimiterBehavior Behavior) : IPreTokenizer
{
    public void PreTokenize(PreTokenizedString text) =>
        text.Split((_, s) => Splitting.ByCodePoint(s, Punctuation.IsBertPunctuation, Behavior));
}

internal static class Punctuation
{
    /// <summary>Rust's <c>is_ascii_punctuation() || is_punctuation()</c>: ASCII symbols count too ($, +, &lt;, ^, `...).</summary>
    public static bool IsBertPunctuation(Rune c) =>
        (c.Value < 128 && char.IsAsciiLetterOrDigit((char)c.Value) is false && c.Value is > 32 and < 127)
        || Rune.GetUnicodeCategory(c) is UnicodeCategory.ConnectorPunctuation or UnicodeCategory.DashPunctuation
            or UnicodeCategory.OpenPunctuation or UnicodeCategory.ClosePunctuation or UnicodeCategory.InitialQuotePunctuation
            or UnicodeCategory.FinalQuotePunctuation or UnicodeCategory.OtherPunctuation;
}

/// <summary><c>Digits</c>: digits apart from the rest, each alone or in runs.</summary>
internal sealed record DigitsPreTokenizer(bool IndividualDigits) : IPreTokenizer
{
    // Rust's char::is_numeric: categories Nd, Nl and No.
    private static bool IsNumeric(Rune c) => Rune.GetUnicodeCategory(c) is UnicodeCategory.DecimalDigitNumber
        or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber;

    public void PreTokenize(PreTokenizedString text) => text.Split((_, s) =>
        Splitting.ByCodePoint(s, IsNumeric, IndividualDigits ? SplitDelimiterBehavior.Isolated : SplitDelimiterBehavior.Contiguous));
}

/// <summary><c>CharDelimiterSplit</c>: on one char, which goes.</summary>
internal sealed record CharDelimiterSplitPreTokenizer(Rune Delimiter) : IPreTokenizer
{
    public void PreTokenize(PreTokenizedString text) =>
        text.Split((_, s) => Splitting.ByCodePoint(s, c => c == Delimiter, SplitDelimiterBehavior.Removed));
}

/// <summary>Metaspace's choice of where to put the replacement in front of the text.</summary>
internal enum PrependScheme { Always, First, Never }

/// <summary>
/// <c>Metaspace</c> (SentencePiece style): spaces become the replacement (▁), which is prepended per the scheme, and
/// with <c>split</c> each ▁ starts a new piece.
/// </summary>
internal sealed record MetaspacePreTokenizer(Rune Replacement, PrependScheme PrependScheme, bool SplitPieces) : IPreTokenizer
{
    public void PreTokenize(PreTokenizedString text)
    {
        string replacement = Replacement.ToString();
        text.Split((_, s) =>
        {
            s = s.MapCodePoints(c => c.Value == ' ' ? replacement : c.ToString());
            bool prepend = PrependScheme switch
            {
                PrependScheme.Always => true,
                PrependScheme.First => s.OriginalStart == 0,
                _ => false,
            };
            if (prepend && !s.Text.StartsWith(replacement, StringComparison.Ordinal))
                s = s.Prepend(replacement);
            return SplitPieces
                ? Splitting.ByCodePoint(s, c => c == Replacement, SplitDelimiterBehavior.MergedWithNext)
                : [new Piece(s)];
        });
    }
}

/// <summary>
/// <c>ByteLevel</c> (GPT-2): optionally a space in front, optionally GPT-2's regex split, then every UTF-8 byte
/// becomes its char in the byte-level alphabet.
/// </summary>
internal sealed class ByteLevelPreTokenizer(bool addPrefixSpace, bool useRegex) : IPreTokenizer
{
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private readonly CodePointRegex? regex = useRegex ? new CodePointRegex(Gpt2Pattern, "ByteLevel") : null;

    public void PreTokenize(PreTokenizedString text)
    {
        text.Split((_, s) =>
        {
            if (addPrefixSpace && !s.Text.StartsWith(' ')) s = s.Prepend(" ");
            return regex is null ? [new Piece(s)] : Splitting.ByRegex(s, regex, SplitDelimiterBehavior.Isolated);
        });
        text.Normalize(ToByteLevel);
    }

    /// <summary>Each code point becomes the alphabet chars of its UTF-8 bytes (all aligned to that code point).</summary>
    public static NormalizedString ToByteLevel(NormalizedString s)
    {
        Span<byte> utf8 = stackalloc byte[4];
        Span<char> chars = stackalloc char[4];
        var builder = s.Rewrite();
        for (int i = 0; i < s.Length;)
        {
            var rune = Rune.GetRuneAt(s.Text, i);
            int n = rune.EncodeToUtf8(utf8);
            for (int b = 0; b < n; b++) chars[b] = ByteLevelAlphabet.ToChar(utf8[b]);
            builder.Append(chars[..n], i, i + rune.Utf16SequenceLength);
            i += rune.Utf16SequenceLength;
        }
        return builder.Build();
    }
}

/// <summary>
/// <c>UnicodeScripts</c>: a new piece wherever the script changes (tokenizers' <c>pre_tokenizers/unicode_scripts</c>,
/// after SentencePiece's IsValidSentencePiece). Hiragana, Katakana and ー (U+30FC) count as Han, so Japanese stays
/// whole; a space belongs to no script ("Any") and stays with the piece before it, as do code points the Unicode 9.0
/// table does not know. Common (digits, punctuation) is a script of its own. As in tokenizers, anything before the
/// first code point that has a script (leading spaces) is dropped.
/// </summary>
internal sealed class UnicodeScriptsPreTokenizer : IPreTokenizer
{
    private static readonly int Han = UnicodeScriptTable.Names.IndexOf("Han");
    private static readonly int Hiragana = UnicodeScriptTable.Names.IndexOf("Hiragana");
    private static readonly int Katakana = UnicodeScriptTable.Names.IndexOf("Katakana");

    /// <summary>The script index tokenizers' <c>fixed_script</c> gives (0 is Any).</summary>
    public static int FixedScript(Rune c)
    {
        if (c.Value == 0x30FC) return Han;
        if (c.Value == ' ') return 0;
        int script = UnicodeScriptTable.ScriptOf(c.Value);
        return script == Hiragana || script == Katakana ? Han : script;
    }

    public void PreTokenize(PreTokenizedString text) => text.Split((_, s) =>
    {
        var starts = new List<int>();
        int last = -1; // no script yet
        for (int i = 0; i < s.Length;)
        {
            var rune = Rune.GetRuneAt(s.Text, i);
            int script = FixedScript(rune);
            if (script != 0 && script != last) starts.Add(i);
            if (script != 0) last = script;
            i += rune.Utf16SequenceLength;
        }
        starts.Add(s.Length);
        var pieces = new List<Piece>(starts.Count - 1);
        for (int k = 0; k + 1 < starts.Count; k++) pieces.Add(new Piece(s.Slice(starts[k], starts[k + 1])));
        return pieces;
    });
}
