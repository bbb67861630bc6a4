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
/// "，" and "。" stay separate. Known difference from HF: .NET regexes see UTF-16, so a letter outside
/// the BMP (CJK Extension B) is matched as "other" rather than \p{L}; emoji behave the same in both.
/// </remarks>
internal static partial class Gpt2PreTokenizer
{
    public const string Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    [GeneratedRegex(Pattern)]
    public static partial Regex Regex();

    /// <summary>The regex pieces of <paramref name="text"/>, in order, as (start, length).</summary>
    public static PieceEnumerator Pieces(ReadOnlySpan<char> text) => new(text, Regex());

    /// <summary>The pieces of <paramref name="text"/> under another split pattern (a tokenizer.json <c>Split</c> pre-tokenizer).</summary>
    public static PieceEnumerator Pieces(ReadOnlySpan<char> text, Regex pattern) => new(text, pattern);

    /// <summary>
    /// Walks the regex matches. The pattern matches every char (each is \s, \p{L}, \p{N} or none of them),
    /// but a gap would still be returned as a piece: dropping text would break the byte round trip.
    /// </summary>
    public ref struct PieceEnumerator
    {
        private readonly int length;
        private Regex.ValueMatchEnumerator matches;
        private int covered;
        private (int Start, int Length) pending;
        private bool hasPending;

        public PieceEnumerator(ReadOnlySpan<char> text, Regex pattern)
        {
            length = text.Length;
            matches = pattern.EnumerateMatches(text);
        }

        public (int Start, int Length) Current { get; private set; }

        public readonly PieceEnumerator GetEnumerator() => this;

        public bool MoveNext()
        {
            if (hasPending)
            {
                hasPending = false;
                Current = pending;
                covered = pending.Start + pending.Length;
                return true;
            }
            if (matches.MoveNext())
            {
                var m = matches.Current;
                if (m.Index > covered)
                {
                    pending = (m.Index, m.Length);
                    hasPending = true;
                    Current = (covered, m.Index - covered);
                    return true;
                }
                Current = (m.Index, m.Length);
                covered = m.Index + m.Length;
                return true;
            }
            if (covered < length)
            {
                Current = (covered, length - covered);
                covered = length;
                return true;
            }
            return false;
        }
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
