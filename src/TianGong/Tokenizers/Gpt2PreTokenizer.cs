using System.Text.RegularExpressions;

namespace TianGong.Tokenizers;

/// <summary>
/// Splits text into the pieces BPE merges never cross: special tokens first, then GPT-2's regex.
/// </summary>
/// <remarks>
/// We use GPT-2's pattern unchanged rather than a CJK-specific variant. Hugging Face's ByteLevel
/// pre-tokenizer (use_regex: true) applies exactly this pattern, so a tokenizer.json we save gives the
/// same ids in HF tokenizers/transformers; a variant would need a Split pre-tokenizer in a different
/// regex dialect. For Chinese the pattern is already sensible: Han characters are \p{L}, so a clause
/// between punctuation marks is one piece and merges can learn multi-character words inside it, while
/// "，" and "。" stay separate. The regex matches code points as HF's does (<see cref="CodePointRegex"/>),
/// so a letter outside the BMP (CJK Extension B) is \p{L} and 𝟏𝟐𝟑 are digits.
/// </remarks>
internal static partial class Gpt2PreTokenizer
{
    public const string Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    /// <summary>The pattern over UTF-16, for Microsoft.ML.Tokenizers' decoder set-up only (it never splits text here).</summary>
    [GeneratedRegex(Pattern)]
    public static partial Regex Regex();

    private static readonly CodePointRegex CodePoints = new(Pattern, "GPT-2's pre-tokenizer");

    /// <summary>The regex pieces of <paramref name="text"/>, in order, as (start, length).</summary>
    public static List<(int Start, int Length)> Pieces(ReadOnlySpan<char> text) => Pieces(text, CodePoints);

    /// <summary>
    /// The pieces of <paramref name="text"/> under a split pattern (a tokenizer.json <c>Split</c> pre-tokenizer).
    /// The pattern matches every char (each is \s, \p{L}, \p{N} or none of them), but a gap would still be returned
    /// as a piece: dropping text would break the byte round trip.
    /// </summary>
    public static List<(int Start, int Length)> Pieces(ReadOnlySpan<char> text, CodePointRegex pattern)
    {
        var pieces = new List<(int, int)>();
        int covered = 0;
        foreach (var (start, end) in pattern.Matches(text.ToString()))
        {
            if (start > covered) pieces.Add((covered, start - covered));
            pieces.Add((start, end - start));
            covered = end;
        }
        if (covered < text.Length) pieces.Add((covered, text.Length - covered));
        return pieces;
    }

    /// <summary>
    /// Finds the earliest occurrence of any special token in <paramref name="text"/> (the longest one when
    /// several start there). Returns the index into <paramref name="specials"/>, or -1.
    /// </summary>
    public static int FindSpecial(ReadOnlySpan<char> text, IReadOnlyList<string> specials, out int position)
    {
        position = -1;
        int best = -1;
        for (int s = 0; s < specials.Count; s++)
        {
            int at = text.IndexOf(specials[s], StringComparison.Ordinal);
            if (at < 0) continue;
            if (best < 0 || at < position || (at == position && specials[s].Length > specials[best].Length))
            {
                best = s;
                position = at;
            }
        }
        return best;
    }
}
