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
/// <c>ByteLevel</c> as a post-processor only trims offsets in HF; ids and tokens are unchanged, and so are our
/// offsets (they keep the leading space the token carries).
/// </summary>
internal sealed class ByteLevelProcessor : IPostProcessor
{
    public List<EncodedToken> Process(List<EncodedToken> tokens, bool addSpecialTokens) => tokens;
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
