using System.Globalization;
using System.Text;

namespace TianGong.Tokenizers;

/// <summary>
/// Finds added tokens in text as HF's <c>AddedVocabulary</c>: first the non-normalized ones in the original text,
/// then the normalized ones (their content normalized too) in the normalized text; at each position the leftmost
/// and then longest token wins (Aho-Corasick leftmost-longest), and a single-word token touching a word is skipped.
/// </summary>
internal sealed class AddedVocabulary
{
    private readonly TokenMatcher original, normalized;

    public IReadOnlyList<AddedToken> Tokens { get; }

    public AddedVocabulary(IReadOnlyList<AddedToken> tokens, INormalizer? normalizer)
    {
        Tokens = tokens;
        // HF puts special tokens before the others; within the matcher only position and length decide.
        original = new TokenMatcher(tokens.Where(t => !t.Normalized).Select(t => (t, t.Content)));
        normalized = new TokenMatcher(tokens.Where(t => t.Normalized)
            .Select(t => (t, normalizer?.Normalize(NormalizedString.FromOriginal(t.Content)).Text ?? t.Content)));
    }

    public IEnumerable<Piece> SplitOriginal(NormalizedString text) => SplitOn(text, original);

    public IEnumerable<Piece> SplitNormalized(NormalizedString text) => SplitOn(text, normalized);

    private static IEnumerable<Piece> SplitOn(NormalizedString text, TokenMatcher matcher)
    {
        if (matcher.IsEmpty) return [new Piece(text)];
        var splits = new List<Piece>();
        string s = text.Text;
        int covered = 0;
        foreach (var (token, matchStart, matchEnd) in matcher.Matches(s))
        {
            int start = matchStart, end = matchEnd;
            if (token.SingleWord && ((start > 0 && IsWordChar(s, start, before: true)) || (end < s.Length && IsWordChar(s, end, before: false))))
                continue;
            if (token.LStrip)
            {
                while (start > 0 && char.IsWhiteSpace(s[start - 1])) start--;
                start = Math.Max(start, covered);
            }
            if (token.RStrip)
                while (end < s.Length && char.IsWhiteSpace(s[end])) end++;
            if (covered < start) splits.Add(new Piece(text.Slice(covered, start)));
            // As HF: the token's string is the text it matched (normalized, with what lstrip/rstrip swallowed).
            splits.Add(new Piece(text.Slice(start, end), [new Token(token.Id, s[start..end], 0, end - start)]));
            covered = end;
        }
        if (covered < s.Length) splits.Add(new Piece(text.Slice(covered, s.Length)));
        return splits;
    }

    /// <summary>Rust regex's Unicode <c>\w</c> for the code point ending at (before) or starting at <paramref name="at"/>.</summary>
    private static bool IsWordChar(string s, int at, bool before)
    {
        Rune c = before
            ? (Rune.DecodeLastFromUtf16(s.AsSpan(0, at), out var r, out _) == System.Buffers.OperationStatus.Done ? r : Rune.ReplacementChar)
            : (Rune.DecodeFromUtf16(s.AsSpan(at), out var f, out _) == System.Buffers.OperationStatus.Done ? f : Rune.ReplacementChar);
        return Rune.IsLetterOrDigit(c) || Rune.GetUnicodeCategory(c) is UnicodeCategory.NonSpacingMark
            or UnicodeCategory.SpacingCombiningMark or UnicodeCategory.EnclosingMark or UnicodeCategory.ConnectorPunctuation
            or UnicodeCategory.LetterNumber;
    }

    /// <summary>Leftmost-longest literal matching: candidates grouped by first char, longest first.</summary>
    private sealed class TokenMatcher
    {
        private readonly Dictionary<char, (AddedToken Token, string Pattern)[]> byFirstChar;

        public TokenMatcher(IEnumerable<(AddedToken Token, string Pattern)> tokens)
        {
            byFirstChar = tokens.Where(t => t.Pattern.Length > 0)
                .GroupBy(t => t.Pattern[0])
                .ToDictionary(g => g.Key, g => g.OrderByDescending(t => t.Pattern.Length).ToArray());
        }

        public bool IsEmpty => byFirstChar.Count == 0;

        public IEnumerable<(AddedToken Token, int Start, int End)> Matches(string s)
        {
            for (int i = 0; i < s.Length;)
            {
                if (byFirstChar.TryGetValue(s[i], out var candidates))
                {
                    var hit = Array.Find(candidates, c => s.AsSpan(i).StartsWith(c.Pattern, StringComparison.Ordinal));
                    if (hit.Pattern is not null)
                    {
                        yield return (hit.Token, i, i + hit.Pattern.Length);
                        i += hit.Pattern.Length;
                        continue;
                    }
                }
                i++;
            }
        }
    }
}
