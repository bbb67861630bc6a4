using System.Globalization;
using System.Text;

namespace TianGong.Tokenizers.Templates;

/// <summary>An error in a template's source or while rendering it, with the template's location.</summary>
public class JinjaException(string message) : TianGongException(message);

/// <summary>The template called <c>raise_exception(message)</c>: the message is the template author's, shown as it is.</summary>
public sealed class JinjaRaisedException(string message) : JinjaException(message);

internal enum TokenKind { Name, String, Integer, Float, Operator, End }

internal readonly record struct JinjaToken(TokenKind Kind, string Text, object? Value = null)
{
    public bool Is(string op) => Kind is TokenKind.Operator or TokenKind.Name && Text == op;
    public override string ToString() => Kind == TokenKind.End ? "end of tag" : $"`{Text}`";
}

internal enum SegmentKind { Text, Output, Statement }

/// <summary>A piece of template source: literal text, a <c>{{ expression }}</c>, or a <c>{% statement %}</c> (as tokens).</summary>
internal sealed record Segment(SegmentKind Kind, string Text, IReadOnlyList<JinjaToken> Tokens, int Line);

/// <summary>
/// Splits template source into text and tags, applying whitespace control as transformers configures Jinja:
/// <c>trim_blocks</c> (the newline after a block or comment tag goes), <c>lstrip_blocks</c> (spaces and tabs before a
/// block or comment tag at the start of a line go), and the explicit <c>-</c> / <c>+</c> markers.
/// </summary>
internal static class JinjaLexer
{
    private static readonly string[] Operators =
        ["**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">", "=", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|"];

    public static List<Segment> Segments(string source, string where)
    {
        var segments = new List<Segment>();
        int pos = 0;
        bool trimNextText = false, trimNextNewline = false;
        while (pos <= source.Length)
        {
            int open = FindTagOpen(source, pos);
            int textEnd = open < 0 ? source.Length : open;
            string text = source[pos..textEnd];
            char kind = open < 0 ? '\0' : source[open + 1];
            char marker = open >= 0 && open + 2 < source.Length ? source[open + 2] : '\0';

            if (trimNextText) text = text.TrimStart();
            else if (trimNextNewline) text = text.StartsWith("\r\n", StringComparison.Ordinal) ? text[2..] : text.StartsWith('\n') ? text[1..] : text;
            if (open >= 0)
            {
                if (marker == '-') text = text.TrimEnd();
                else if (kind is '%' or '#' && marker != '+')
                {
                    // lstrip_blocks: only when the tag is the first thing on its line.
                    int lineStart = source.LastIndexOf('\n', Math.Max(open - 1, 0)) + 1;
                    if (open > 0 && source[open - 1] == '\n') lineStart = open;
                    int blank = open - lineStart;
                    if (lineStart >= pos && source.AsSpan(lineStart, blank).IndexOfAnyExcept(' ', '\t') < 0)
                        text = text.Length >= blank ? text[..^blank] : "";
                }
            }
            if (text.Length > 0) segments.Add(new Segment(SegmentKind.Text, text, [], LineOf(source, pos)));
            if (open < 0) break;

            int contentStart = open + 2 + (marker is '-' or '+' ? 1 : 0);
            int line = LineOf(source, open);
            if (kind == '#')
            {
                int close = source.IndexOf("#}", contentStart, StringComparison.Ordinal);
                if (close < 0) throw new JinjaException($"{where}: line {line}: a comment `{{#` is never closed");
                bool minus = close > contentStart && source[close - 1] == '-';
                (trimNextText, trimNextNewline) = (minus, !minus);
                pos = close + 2;
                continue;
            }
            string closer = kind == '{' ? "}}" : "%}";
            var tokens = Tokenize(source, contentStart, closer, out int closeAt, out bool closeMinus, out bool closePlus, where, line);
            if (kind == '%' && tokens is [{ Kind: TokenKind.Name, Text: "raw" }])
            {
                // {% raw %}...{% endraw %}: the text between is output as it is.
                int end = FindEndRaw(source, closeAt + 2, out int endRawOpen, out int endRawClose);
                if (end < 0) throw new JinjaException($"{where}: line {line}: `{{% raw %}}` is never closed by `{{% endraw %}}`");
                string raw = source[(closeAt + 2)..endRawOpen];
                if (closeMinus) raw = raw.TrimStart();
                if (source[endRawOpen + 2] == '-') raw = raw.TrimEnd();
                if (raw.Length > 0) segments.Add(new Segment(SegmentKind.Text, raw, [], line));
                bool endMinus = source[endRawClose - 1] == '-';
                (trimNextText, trimNextNewline) = (endMinus, !endMinus);
                pos = endRawClose + 2;
                continue;
            }
            segments.Add(new Segment(kind == '{' ? SegmentKind.Output : SegmentKind.Statement, "", tokens, line));
            trimNextText = closeMinus;
            trimNextNewline = kind == '%' && !closeMinus && !closePlus;
            pos = closeAt + 2;
        }
        return segments;
    }

    private static int FindTagOpen(string s, int from)
    {
        for (int i = s.IndexOf('{', from); i >= 0 && i + 1 < s.Length; i = s.IndexOf('{', i + 1))
            if (s[i + 1] is '{' or '%' or '#') return i;
        return -1;
    }

    private static int FindEndRaw(string s, int from, out int open, out int close)
    {
        for (int i = FindTagOpen(s, from); i >= 0; i = FindTagOpen(s, i + 2))
        {
            if (s[i + 1] != '%') continue;
            int j = i + 2;
            if (j < s.Length && s[j] is '-' or '+') j++;
            while (j < s.Length && char.IsWhiteSpace(s[j])) j++;
            if (string.CompareOrdinal(s, j, "endraw", 0, 6) != 0) continue;
            int c = s.IndexOf("%}", j, StringComparison.Ordinal);
            if (c < 0) break;
            (open, close) = (i, c);
            return i;
        }
        (open, close) = (-1, -1);
        return -1;
    }

    private static int LineOf(string s, int pos)
    {
        int line = 1;
        for (int i = 0; i < pos && i < s.Length; i++) if (s[i] == '\n') line++;
        return line;
    }

    /// <summary>The expression tokens of a tag, up to its closer (<c>}}</c> or <c>%}</c>, outside string literals).</summary>
    private static List<JinjaToken> Tokenize(string s, int pos, string closer, out int closeAt, out bool closeMinus, out bool closePlus,
        string where, int line)
    {
        var tokens = new List<JinjaToken>();
        while (true)
        {
            while (pos < s.Length && char.IsWhiteSpace(s[pos])) pos++;
            if (pos >= s.Length) throw new JinjaException($"{where}: line {line}: a tag is never closed by `{closer}`");
            if (s[pos] is '-' or '+' && string.CompareOrdinal(s, pos + 1, closer, 0, 2) == 0)
            {
                (closeAt, closeMinus, closePlus) = (pos + 1, s[pos] == '-', s[pos] == '+');
                return tokens;
            }
            if (string.CompareOrdinal(s, pos, closer, 0, 2) == 0)
            {
                (closeAt, closeMinus, closePlus) = (pos, false, false);
                return tokens;
            }
            char c = s[pos];
            if (char.IsLetter(c) || c == '_')
            {
                int start = pos;
                while (pos < s.Length && (char.IsLetterOrDigit(s[pos]) || s[pos] == '_')) pos++;
                tokens.Add(new JinjaToken(TokenKind.Name, s[start..pos]));
            }
            else if (char.IsAsciiDigit(c))
            {
                int start = pos;
                while (pos < s.Length && (char.IsAsciiDigit(s[pos]) || s[pos] == '_')) pos++;
                bool isFloat = false;
                if (pos + 1 < s.Length && s[pos] == '.' && char.IsAsciiDigit(s[pos + 1]))
                {
                    isFloat = true;
                    pos++;
                    while (pos < s.Length && char.IsAsciiDigit(s[pos])) pos++;
                }
                if (pos < s.Length && s[pos] is 'e' or 'E' && pos + 1 < s.Length && (char.IsAsciiDigit(s[pos + 1]) || s[pos + 1] is '+' or '-'))
                {
                    isFloat = true;
                    pos += 2;
                    while (pos < s.Length && char.IsAsciiDigit(s[pos])) pos++;
                }
                string text = s[start..pos].Replace("_", "");
                tokens.Add(isFloat
                    ? new JinjaToken(TokenKind.Float, text, double.Parse(text, CultureInfo.InvariantCulture))
                    : new JinjaToken(TokenKind.Integer, text, long.Parse(text, CultureInfo.InvariantCulture)));
            }
            else if (c is '\'' or '"')
            {
                tokens.Add(new JinjaToken(TokenKind.String, "string", ReadString(s, ref pos, where, line)));
            }
            else
            {
                var op = Operators.FirstOrDefault(o => string.CompareOrdinal(s, pos, o, 0, o.Length) == 0)
                    ?? throw new JinjaException($"{where}: line {line}: unexpected character `{c}` in a tag");
                tokens.Add(new JinjaToken(TokenKind.Operator, op));
                pos += op.Length;
            }
        }
    }

    /// <summary>A Python-style string literal with backslash escapes.</summary>
    private static string ReadString(string s, ref int pos, string where, int line)
    {
        char quote = s[pos++];
        var text = new StringBuilder();
        while (true)
        {
            if (pos >= s.Length) throw new JinjaException($"{where}: line {line}: a string literal is never closed");
            char c = s[pos++];
            if (c == quote) return text.ToString();
            if (c != '\\' || pos >= s.Length) { text.Append(c); continue; }
            char e = s[pos++];
            switch (e)
            {
                case 'n': text.Append('\n'); break;
                case 't': text.Append('\t'); break;
                case 'r': text.Append('\r'); break;
                case '0': text.Append('\0'); break;
                case 'b': text.Append('\b'); break;
                case 'f': text.Append('\f'); break;
                case 'v': text.Append('\v'); break;
                case 'a': text.Append('\a'); break;
                case '\n': break;
                case 'x' when pos + 2 <= s.Length: text.Append((char)Convert.ToInt32(s.Substring(pos, 2), 16)); pos += 2; break;
                case 'u' when pos + 4 <= s.Length: text.Append((char)Convert.ToInt32(s.Substring(pos, 4), 16)); pos += 4; break;
                case 'U' when pos + 8 <= s.Length: text.Append(char.ConvertFromUtf32(Convert.ToInt32(s.Substring(pos, 8), 16))); pos += 8; break;
                case '\\' or '\'' or '"': text.Append(e); break;
                default: text.Append('\\').Append(e); break; // Python keeps unknown escapes as they are
            }
        }
    }
}
