namespace TianGong.Tokenizers;

/// <summary>
/// One token of an encoding: id, the token's string, its span (UTF-16 indices) in the text it came from (the first or,
/// with <see cref="SequenceIndex"/> 1, the second of a pair), whether a post-processor added it, and its type id
/// (what the model's token_type_ids input gets; the post-processor decides it).
/// </summary>
public readonly record struct EncodedToken(int Id, string Value, int Start, int End, bool Special = false, int TypeId = 0, int SequenceIndex = 0);

/// <summary>
/// Adds the special tokens a model expects around one sequence or a pair (HF <c>processors</c>), when
/// <c>add_special_tokens</c> is on, and sets type ids. As HF's <c>process_encodings</c>, each step sees the encodings
/// separately (one, or two for a pair); the tokenizer concatenates them at the end.
/// </summary>
internal interface IPostProcessor
{
    List<List<EncodedToken>> Process(List<List<EncodedToken>> encodings, bool addSpecialTokens);
}

/// <summary><c>Sequence</c>: each processor in turn.</summary>
internal sealed record SequenceProcessor(IReadOnlyList<IPostProcessor> Processors) : IPostProcessor
{
    public List<List<EncodedToken>> Process(List<List<EncodedToken>> encodings, bool addSpecialTokens)
    {
        foreach (var p in Processors) encodings = p.Process(encodings, addSpecialTokens);
        return encodings;
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

    public List<List<EncodedToken>> Process(List<List<EncodedToken>> encodings, bool addSpecialTokens) =>
        TrimOffsets ? [.. encodings.Select(Trim)] : encodings;

    private List<EncodedToken> Trim(List<EncodedToken> tokens)
    {
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

/// <summary>One piece of a template with its type id: a special token's ids, or sequence A or B itself.</summary>
internal abstract record TemplatePiece
{
    public int TypeId { get; init; }

    public sealed record Special(IReadOnlyList<int> Ids, IReadOnlyList<string> Tokens) : TemplatePiece;

    /// <summary><c>$A</c> (the first sequence) or <c>$B</c> (the second of a pair).</summary>
    public sealed record Sequence(bool IsB = false) : TemplatePiece;
}

/// <summary>
/// <c>TemplateProcessing</c> (and transformers' LlamaTokenizerFast bos/eos templates): the single or pair template's
/// special tokens around the sequences. As HF, a sequence takes its piece's type id even when special tokens are off.
/// A pair with no pair template is an error when a pair is encoded.
/// </summary>
internal sealed record TemplateProcessor(IReadOnlyList<TemplatePiece> Single, IReadOnlyList<TemplatePiece>? Pair = null) : IPostProcessor
{
    public List<List<EncodedToken>> Process(List<List<EncodedToken>> encodings, bool addSpecialTokens)
    {
        var template = encodings.Count == 1 ? Single
            : Pair ?? throw new TianGongException("the tokenizer's TemplateProcessing has no `pair` template, so it cannot encode a pair");
        var result = new List<List<EncodedToken>>(template.Count);
        foreach (var piece in template)
        {
            if (piece is TemplatePiece.Special special)
            {
                if (!addSpecialTokens) continue;
                var tokens = new List<EncodedToken>(special.Ids.Count);
                for (int i = 0; i < special.Ids.Count; i++) tokens.Add(new EncodedToken(special.Ids[i], special.Tokens[i], 0, 0, Special: true, piece.TypeId));
                result.Add(tokens);
            }
            else if (piece is TemplatePiece.Sequence sequence)
            {
                var tokens = encodings[sequence.IsB ? 1 : 0];
                result.Add([.. tokens.Select(t => t with { TypeId = piece.TypeId })]);
            }
        }
        return result;
    }
}

/// <summary><c>BertProcessing</c>: [CLS] A [SEP] and [CLS] A [SEP] B [SEP], B and its [SEP] of type 1; nothing when special tokens are off.</summary>
internal sealed record BertProcessor(TemplatePiece.Special Cls, TemplatePiece.Special Sep) : IPostProcessor
{
    public List<List<EncodedToken>> Process(List<List<EncodedToken>> encodings, bool addSpecialTokens)
    {
        if (!addSpecialTokens) return encodings;
        var single = new TemplateProcessor([Cls, new TemplatePiece.Sequence(), Sep],
            [Cls, new TemplatePiece.Sequence(), Sep, new TemplatePiece.Sequence(IsB: true) { TypeId = 1 }, Sep with { TypeId = 1 }]);
        return single.Process(encodings, addSpecialTokens);
    }
}

/// <summary>
/// <c>RobertaProcessing</c>: offsets trimmed as ByteLevel's, every type id 0, then &lt;s&gt; A &lt;/s&gt; and
/// &lt;s&gt; A &lt;/s&gt; &lt;/s&gt; B &lt;/s&gt; when special tokens are on.
/// </summary>
internal sealed record RobertaProcessor(TemplatePiece.Special Cls, TemplatePiece.Special Sep, bool TrimOffsets, bool AddPrefixSpace) : IPostProcessor
{
    public List<List<EncodedToken>> Process(List<List<EncodedToken>> encodings, bool addSpecialTokens)
    {
        encodings = new ByteLevelProcessor(TrimOffsets, AddPrefixSpace).Process(encodings, addSpecialTokens);
        if (!addSpecialTokens) return [.. encodings.Select(e => e.Select(t => t with { TypeId = 0 }).ToList())];
        return new TemplateProcessor([Cls, new TemplatePiece.Sequence(), Sep],
            [Cls, new TemplatePiece.Sequence(), Sep, Sep, new TemplatePiece.Sequence(IsB: true), Sep]).Process(encodings, addSpecialTokens);
    }
}
