using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace TianGong.Tokenizers;

/// <summary>
/// A tokenizer.json regex (written for Oniguruma, which matches code points) run by .NET's Regex (which matches
/// UTF-16 code units). Text with characters outside the Basic Multilingual Plane is matched through a stand-in:
/// each such code point becomes one BMP char of the same Unicode general category, so <c>\p{N}</c>, <c>\p{L}</c>
/// and <c>.</c> see one character where Oniguruma does (𝟏𝟐𝟑 are three digits, not six surrogates). The stand-ins
/// come from rarely written blocks; a pattern naming them literally could match them, which no published one does.
/// Every match runs under a timeout, and a timeout names the pattern.
/// </summary>
internal sealed class CodePointRegex
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);
    private static readonly char[] StandIns = BuildStandIns();

    private readonly Regex regex;

    public string Pattern { get; }

    /// <param name="pattern">The regex as the file spells it.</param>
    /// <param name="where">What the pattern belongs to (its JSON path), for errors.</param>
    public CodePointRegex(string pattern, string where)
    {
        Pattern = pattern;
        try
        {
            // The automaton engine cannot backtrack at all; patterns with lookarounds (GPT-2's \s+(?!\S)) need the
            // backtracking engine, bounded by the timeout.
            regex = new Regex(pattern, RegexOptions.NonBacktracking | RegexOptions.CultureInvariant, Timeout);
        }
        catch (NotSupportedException)
        {
            regex = Compile(pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant, where);
        }
        catch (ArgumentException e)
        {
            throw new TianGongException($"{where}: the regex `{pattern}` is not one .NET can run ({e.Message})", e);
        }
    }

    private static Regex Compile(string pattern, RegexOptions options, string where)
    {
        try
        {
            return new Regex(pattern, options, Timeout);
        }
        catch (ArgumentException e)
        {
            throw new TianGongException($"{where}: the regex `{pattern}` is not one .NET can run ({e.Message})", e);
        }
    }

    /// <summary>A regex matching <paramref name="literal"/> exactly (a <c>{"String": ...}</c> pattern).</summary>
    public static CodePointRegex ForLiteral(string literal, string where) => new(Regex.Escape(literal), where);

    /// <summary>The matches in <paramref name="text"/> as UTF-16 (start, end), in order, none empty.</summary>
    public List<(int Start, int End)> Matches(string text)
    {
        var result = new List<(int, int)>();
        try
        {
            if (!HasSurrogates(text))
            {
                foreach (var m in regex.EnumerateMatches(text))
                    if (m.Length > 0) result.Add((m.Index, m.Index + m.Length));
                return result;
            }
            var (proxy, position) = StandInText(text);
            foreach (var m in regex.EnumerateMatches(proxy))
                if (m.Length > 0) result.Add((position[m.Index], position[m.Index + m.Length]));
            return result;
        }
        catch (RegexMatchTimeoutException e)
        {
            throw new TianGongException($"the tokenizer regex `{Pattern}` took longer than {Timeout.TotalSeconds:F0} s on a text of {text.Length} chars; it backtracks too much for this input", e);
        }
    }

    private static bool HasSurrogates(string text) => text.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF') >= 0;

    /// <summary>The text with one char per code point, and for each of its positions the original UTF-16 index.</summary>
    private static (string Proxy, int[] Position) StandInText(string text)
    {
        var proxy = new StringBuilder(text.Length);
        var position = new List<int>(text.Length + 1);
        for (int i = 0; i < text.Length;)
        {
            position.Add(i);
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                int cp = char.ConvertToUtf32(text[i], text[i + 1]);
                proxy.Append(StandIns[(int)CharUnicodeInfo.GetUnicodeCategory(cp)]);
                i += 2;
            }
            else
            {
                // A lone surrogate (only in malformed UTF-16) stays as it is, as Oniguruma would refuse it anyway.
                proxy.Append(text[i]);
                i++;
            }
        }
        position.Add(text.Length);
        return (proxy.ToString(), [.. position]);
    }

    /// <summary>
    /// One BMP char per general category, searched from U+A000 (Yi, Lisu, Vai, Bamum, Hangul, compatibility forms)
    /// and then from U+0100, avoiding ASCII and the CJK ranges patterns name explicitly.
    /// </summary>
    private static char[] BuildStandIns()
    {
        var result = new char[32];
        var found = new bool[32];
        foreach (var range in new[] { (0xA000, 0xFFFD), (0x0100, 0x9FFF), (0x0000, 0x00FF) })
        {
            for (int c = range.Item1; c <= range.Item2; c++)
            {
                if (c is >= 0xD800 and <= 0xDFFF) continue;
                int cat = (int)CharUnicodeInfo.GetUnicodeCategory(c);
                if (found[cat] || char.IsWhiteSpace((char)c) != (cat is (int)UnicodeCategory.SpaceSeparator)) continue;
                (result[cat], found[cat]) = ((char)c, true);
            }
        }
        return result;
    }
}
