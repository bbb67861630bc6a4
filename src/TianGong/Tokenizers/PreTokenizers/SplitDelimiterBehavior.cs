using System.Text;

namespace TianGong.Tokenizers;

/// <summary>What happens to a delimiter when a piece is split on it (HF <c>SplitDelimiterBehavior</c>).</summary>
internal enum SplitDelimiterBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous }

/// <summary>Splitting a <see cref="NormalizedString"/> on matches, as HF's <c>NormalizedString::split</c>.</summary>
internal static class Splitting
{
    public static SplitDelimiterBehavior ParseBehavior(string? name, string where) => name switch
    {
        "Removed" => SplitDelimiterBehavior.Removed,
        "Isolated" => SplitDelimiterBehavior.Isolated,
        "MergedWithPrevious" => SplitDelimiterBehavior.MergedWithPrevious,
        "MergedWithNext" => SplitDelimiterBehavior.MergedWithNext,
        "Contiguous" => SplitDelimiterBehavior.Contiguous,
        _ => throw new TianGongException($"{where}: unknown split behavior `{name}`; expected Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous"),
    };

    /// <summary>Splits on regex matches.</summary>
    public static IEnumerable<Piece> ByRegex(NormalizedString text, CodePointRegex regex, SplitDelimiterBehavior behavior, bool invert = false) =>
        Apply(text, Cover(text.Length, regex.Matches(text.Text)), behavior, invert);

    /// <summary>Splits on every code point <paramref name="isDelimiter"/> accepts, each one a match of its own.</summary>
    public static IEnumerable<Piece> ByCodePoint(NormalizedString text, Func<Rune, bool> isDelimiter, SplitDelimiterBehavior behavior)
    {
        var matches = new List<(int, int)>();
        for (int i = 0; i < text.Length;)
        {
            var rune = Rune.GetRuneAt(text.Text, i);
            int n = rune.Utf16SequenceLength;
            if (isDelimiter(rune)) matches.Add((i, i + n));
            i += n;
        }
        return Apply(text, Cover(text.Length, matches), behavior, invert: false);
    }

    /// <summary>The matches plus the gaps between them, covering the whole text (an empty text is one empty gap).</summary>
    private static List<(int Start, int End, bool IsMatch)> Cover(int length, List<(int Start, int End)> matches)
    {
        var result = new List<(int, int, bool)>(matches.Count * 2 + 1);
        if (length == 0) { result.Add((0, 0, false)); return result; }
        int previous = 0;
        foreach (var (start, end) in matches)
        {
            if (previous != start) result.Add((previous, start, false));
            result.Add((start, end, true));
            previous = end;
        }
        if (previous != length) result.Add((previous, length, false));
        return result;
    }

    private static IEnumerable<Piece> Apply(NormalizedString text, List<(int Start, int End, bool IsMatch)> matches,
        SplitDelimiterBehavior behavior, bool invert)
    {
        if (invert)
            for (int i = 0; i < matches.Count; i++) matches[i] = matches[i] with { IsMatch = !matches[i].IsMatch };
        var pieces = new List<(int Start, int End, bool Remove)>(matches.Count);
        switch (behavior)
        {
            case SplitDelimiterBehavior.Isolated:
                foreach (var m in matches) pieces.Add((m.Start, m.End, false));
                break;
            case SplitDelimiterBehavior.Removed:
                foreach (var m in matches) pieces.Add((m.Start, m.End, m.IsMatch));
                break;
            case SplitDelimiterBehavior.Contiguous:
            {
                bool previousMatch = false;
                foreach (var m in matches)
                {
                    if (m.IsMatch == previousMatch && pieces.Count > 0) pieces[^1] = pieces[^1] with { End = m.End };
                    else pieces.Add((m.Start, m.End, false));
                    previousMatch = m.IsMatch;
                }
                break;
            }
            case SplitDelimiterBehavior.MergedWithPrevious:
            {
                bool previousMatch = false;
                foreach (var m in matches)
                {
                    if (m.IsMatch && !previousMatch && pieces.Count > 0) pieces[^1] = pieces[^1] with { End = m.End };
                    else pieces.Add((m.Start, m.End, false));
                    previousMatch = m.IsMatch;
                }
                break;
            }
            case SplitDelimiterBehavior.MergedWithNext:
            {
                bool previousMatch = false;
                for (int i = matches.Count - 1; i >= 0; i--)
                {
                    var m = matches[i];
                    if (m.IsMatch && !previousMatch && pieces.Count > 0) pieces[^1] = pieces[^1] with { Start = m.Start };
                    else pieces.Add((m.Start, m.End, false));
                    previousMatch = m.IsMatch;
                }
                pieces.Reverse();
                break;
            }
        }
        foreach (var (start, end, remove) in pieces)
            if (!remove) yield return new Piece(text.Slice(start, end));
    }
}
