namespace TianGong.Tokenizers;

/// <summary>One token of an encoding: id, the token's string, its span in the original text, and whether a post-processor added it.</summary>
public readonly record struct EncodedToken(int Id, string Value, int Start, int End, bool Special = false);

/// <summary>
/// Adds the special tokens a model expects around a sequence (HF <c>processors</c>), when <c>add_special_tokens</c>
/// is on. Only single sequences are encoded here; pairs (for cross-encoders) are not supported.
/// </summary>
internal interface IPostProcessor
{
    List<EncodedToken> Process(List<EncodedToken> tokens, bool addSpecialTokens);
}

/// <summary><c>Sequence</c>: each processor in turn.</summary>
internal sealed record SequenceProcessor(IReadOnlyList<IPostProcessor> Processors) : IPostProcessor
{
    public List<EncodedToken> Process(List<EncodedToken> tokens, bool addSpecialTokens)
    {
        foreach (var p in Processors) tokens = p.Process(tokens, addSpecialTokens);
        return tokens;
    }
}

/// <summary>
/// <c>ByteLevel</c> as a post-processor (and RobertaProcessing's <c>trim_offsets</c>): ids are unchanged; with
/// <c>trim_offsets</c> a token's span loses the spaces its string starts or ends with (Ġ), except the one space
/// <c>add_prefix_space</c> put in front of the first token, as HF's <c>process_offsets</c>.
/// </summary>
internal sealed record ByteLevelProcessor(bool TrimOffsets, bool AddPrefixSpace) : IPostProcessor
{
    private static bool IsSpace(char c) => c == ByteLevelAlphabet.ToChar((byte)' ') || char.IsWhiteSpace(c);

    public List<EncodedToken> Process(List<EncodedToken> tokens, bool addSpecialTokens)
    {
        if (!TrimOffsets) return tokens;
        var result = new List<EncodedToken>(tokens.Count);
        for (int i = 0; i < tokens.Count; i++)
        {
            var t = tokens[i];
            int leading = 0, trailing = 0;
            while (leading < t.Value.Length && IsSpace(t.Value[leading])) leading++;
            while (trailing < t.Value.Length && IsSpace(t.Value[t.Value.Length - 1 - trailing])) trailing++;
            int start = t.Start, end = t.End;
            if (leading > 0)
            {
                if ((i == 0 || start == 0) && AddPrefixSpace && leading == 1) leading = 0;
                start = Math.Min(start + leading, end);
            }
            if (trailing > 0 && end >= trailing) end = Math.Max(end - trailing, start);
            result.Add(t with { Start = start, End = end });
        }
        return result;
    }
}

/// <summary>One piece of a template: a special token's ids, or the sequence itself.</summary>
internal abstract record TemplatePiece
{
    public sealed record Special(IReadOnlyList<int> Ids, IReadOnlyList<string> Tokens) : TemplatePiece;

    public sealed record Sequence : TemplatePiece;
}

/// <summary>
/// <c>TemplateProcessing</c>, <c>BertProcessing</c> ([CLS] A [SEP]) and <c>RobertaProcessing</c> (&lt;s&gt; A &lt;/s&gt;):
/// the single-sequence template's special tokens around the sequence.
/// </summary>
internal sealed record TemplateProcessor(IReadOnlyList<TemplatePiece> Single) : IPostProcessor
{
    public List<EncodedToken> Process(List<EncodedToken> tokens, bool addSpecialTokens)
    {
        if (!addSpecialTokens) return tokens;
        var result = new List<EncodedToken>(tokens.Count + 4);
        foreach (var piece in Single)
        {
            if (piece is TemplatePiece.Special special)
            {
                for (int i = 0; i < special.Ids.Count; i++) result.Add(new EncodedToken(special.Ids[i], special.Tokens[i], 0, 0, Special: true));
            }
            else
            {
                result.AddRange(tokens);
            }
        }
        return result;
    }
}
