using System.Text;

namespace TianGong.Tokenizers;

/// <summary>Turns token strings back into text (HF <c>decoders</c>); each step maps a list of strings to a list of strings.</summary>
internal interface IDecoder
{
    List<string> DecodeChain(List<string> tokens);
}

/// <summary><c>Sequence</c>: each decoder in turn.</summary>
internal sealed record SequenceDecoder(IReadOnlyList<IDecoder> Decoders) : IDecoder
{
    public List<string> DecodeChain(List<string> tokens)
    {
        foreach (var d in Decoders) tokens = d.DecodeChain(tokens);
        return tokens;
    }
}

/// <summary><c>ByteLevel</c>: all tokens' alphabet chars back to bytes, read as UTF-8 (invalid bytes become U+FFFD).</summary>
internal sealed class ByteLevelDecoder : IDecoder
{
    public List<string> DecodeChain(List<string> tokens)
    {
        var bytes = new List<byte>();
        foreach (var token in tokens)
        {
            // As HF: a token with a char outside the alphabet (an added token) contributes its UTF-8 as it is.
            if (ByteLevelAlphabet.Unspell(token) is { } raw) bytes.AddRange(raw);
            else bytes.AddRange(Encoding.UTF8.GetBytes(token));
        }
        return [Encoding.UTF8.GetString([.. bytes])];
    }
}

/// <summary><c>Metaspace</c>: ▁ back to spaces; the space prepended in front of the first token goes.</summary>
internal sealed record MetaspaceDecoder(char Replacement, PrependScheme PrependScheme) : IDecoder
{
    public List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        for (int i = 0; i < tokens.Count; i++)
        {
            var text = new StringBuilder(tokens[i].Length);
            foreach (char c in tokens[i])
            {
                if (c == Replacement)
                {
                    if (i == 0 && PrependScheme != PrependScheme.Never) continue; // as HF: every ▁ of the first token
                    text.Append(' ');
                }
                else text.Append(c);
            }
            result.Add(text.ToString());
        }
        return result;
    }
}

/// <summary><c>WordPiece</c>: continuations lose their prefix, other tokens get a space in front; optional cleanup of spaces before punctuation.</summary>
internal sealed record WordPieceDecoder(string Prefix, bool Cleanup) : IDecoder
{
    public List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        for (int i = 0; i < tokens.Count; i++)
        {
            string token = tokens[i];
            if (i != 0) token = token.StartsWith(Prefix, StringComparison.Ordinal) ? token[Prefix.Length..] : " " + token;
            result.Add(Cleanup ? CleanupSpaces(token) : token);
        }
        return result;
    }

    /// <summary>HF's <c>cleanup</c>: no space before . ? ! , and English contractions.</summary>
    public static string CleanupSpaces(string s) => s.Replace(" .", ".").Replace(" ?", "?").Replace(" !", "!").Replace(" ,", ",")
        .Replace(" ' ", "'").Replace(" n't", "n't").Replace(" 'm", "'m").Replace(" do not", " don't").Replace(" 's", "'s")
        .Replace(" 've", "'ve").Replace(" 're", "'re");
}

/// <summary><c>BPEDecoder</c>: the end-of-word suffix becomes a space (nothing on the last token).</summary>
internal sealed record BpeDecoder(string Suffix) : IDecoder
{
    public List<string> DecodeChain(List<string> tokens) =>
        [.. tokens.Select((t, i) => t.Replace(Suffix, i == tokens.Count - 1 ? "" : " "))];
}

/// <summary><c>ByteFallback</c>: runs of &lt;0xAB&gt; tokens become the text of their bytes (U+FFFD per byte when not valid UTF-8).</summary>
internal sealed class ByteFallbackDecoder : IDecoder
{
    public static int ByteOf(string token) =>
        token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
        && byte.TryParse(token.AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, null, out byte b) ? b : -1;

    public List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        var pending = new List<byte>();
        foreach (var token in tokens)
        {
            int b = ByteOf(token);
            if (b >= 0) { pending.Add((byte)b); continue; }
            Flush();
            result.Add(token);
        }
        Flush();
        return result;

        void Flush()
        {
            if (pending.Count == 0) return;
            var bytes = pending.ToArray();
            pending.Clear();
            try
            {
                result.Add(new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes));
            }
            catch (DecoderFallbackException)
            {
                for (int i = 0; i < bytes.Length; i++) result.Add("\uFFFD");
            }
        }
    }
}

/// <summary><c>Fuse</c>: all tokens into one string.</summary>
internal sealed class FuseDecoder : IDecoder
{
    public List<string> DecodeChain(List<string> tokens) => [string.Concat(tokens)];
}

/// <summary><c>Strip</c>: up to <c>start</c> leading and <c>stop</c> trailing copies of a char off each token.</summary>
internal sealed record StripDecoder(char Content, int Start, int Stop) : IDecoder
{
    public List<string> DecodeChain(List<string> tokens) => [.. tokens.Select(t =>
    {
        int from = 0, to = t.Length;
        while (from < Start && from < to && t[from] == Content) from++;
        while (t.Length - to < Stop && to > from && t[to - 1] == Content) to--;
        return t[from..to];
    })];
}

/// <summary><c>Replace</c>: every match in each token becomes the content.</summary>
internal sealed record ReplaceDecoder(CodePointRegex Pattern, string Content) : IDecoder
{
    public List<string> DecodeChain(List<string> tokens) => [.. tokens.Select(t =>
    {
        var matches = Pattern.Matches(t);
        if (matches.Count == 0) return t;
        var text = new StringBuilder(t.Length);
        int previous = 0;
        foreach (var (start, end) in matches)
        {
            text.Append(t, previous, start - previous).Append(Content);
            previous = end;
        }
        return text.Append(t, previous, t.Length - previous).ToString();
    })];
}

/// <summary><c>CTC</c>: repeats collapse, the pad token goes, the word delimiter becomes a space, then WordPiece's cleanup.</summary>
internal sealed record CtcDecoder(string PadToken, string WordDelimiterToken, bool Cleanup) : IDecoder
{
    public List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>();
        for (int i = 0; i < tokens.Count; i++)
        {
            if (i > 0 && tokens[i] == tokens[i - 1]) continue;
            string token = tokens[i].Replace(PadToken, "");
            if (Cleanup) token = WordPieceDecoder.CleanupSpaces(token).Replace(WordDelimiterToken, " ");
            if (token.Length > 0) result.Add(token);
        }
        return result;
    }
}
