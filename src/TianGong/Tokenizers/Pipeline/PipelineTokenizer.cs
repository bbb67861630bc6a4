using System.Text;

namespace TianGong.Tokenizers;

/// <summary>
/// A Hugging Face tokenizer.json run as HF tokenizers runs it: added tokens are found first (in the original text,
/// then, for <c>normalized</c> ones, in the normalized text), the rest is normalized, pre-tokenized, tokenized by the
/// model and post-processed; decoding maps ids to token strings and runs the decoders.
/// </summary>
public sealed class PipelineTokenizer : ITextTokenizer
{
    private readonly INormalizer? normalizer;
    private readonly IPreTokenizer? preTokenizer;
    private readonly ITokenizerModel model;
    private readonly IPostProcessor? postProcessor; // tokenizer_config.json's add_bos/eos_token may replace the file's
    private readonly IDecoder? decoder;
    private readonly AddedVocabulary added;
    private readonly Dictionary<int, AddedToken> addedById = [];
    private readonly Dictionary<string, int> addedByContent = new(StringComparer.Ordinal);
    private readonly HashSet<int> specialIds = [];

    internal PipelineTokenizer(TokenizerPipelineParts parts, TokenizerSettings settings)
    {
        (normalizer, preTokenizer, model, decoder) = (parts.Normalizer, parts.PreTokenizer, parts.Model, parts.Decoder);
        postProcessor = settings.PostProcessorOverride ?? parts.PostProcessor;
        var tokens = new List<AddedToken>();
        foreach (var token in parts.AddedTokens.Concat(settings.ExtraAddedTokens))
        {
            if (addedByContent.ContainsKey(token.Content) || addedById.ContainsKey(token.Id)) continue;
            tokens.Add(token);
            addedById[token.Id] = token;
            addedByContent[token.Content] = token.Id;
            if (token.Special) specialIds.Add(token.Id);
        }
        added = new AddedVocabulary(tokens, normalizer);
        VocabSize = Math.Max(model.VocabSize, addedById.Count == 0 ? 0 : addedById.Keys.Max() + 1);
        foreach (var name in settings.SpecialTokenNames)
            if (TokenToId(name) is { } id) specialIds.Add(id);
        SpecialTokens = [.. specialIds.Order().Select(id => IdToToken(id)!)];
        // Without names from tokenizer_config.json: the template's first and last special tokens ([CLS]/[SEP], <bos>),
        // a [PAD]/<pad> token, else <|endoftext|> (GPT-2, our own files) or the lowest special id.
        int fallback = addedByContent.TryGetValue(BpeTrainerOptions.EndOfText, out int eot) && specialIds.Contains(eot) ? eot
            : specialIds.Count > 0 ? specialIds.Min() : -1;
        var template = SingleTemplate(postProcessor);
        int? first = template is [TemplatePiece.Special { Ids: [var f] }, ..] ? f : null;
        int? last = template is [.., TemplatePiece.Special { Ids: [var l] }] ? l : null;
        int? pad = addedByContent.TryGetValue("[PAD]", out int p1) ? p1 : addedByContent.TryGetValue("<pad>", out int p2) ? p2 : null;
        BosId = Resolve(settings.BosToken, "bos_token") ?? first ?? fallback;
        EosId = Resolve(settings.EosToken, "eos_token") ?? last ?? fallback;
        PadId = Resolve(settings.PadToken, "pad_token") ?? pad ?? fallback;
        ChatTemplate = settings.ChatTemplate;
        if (settings.BosEosOverride is var (bos, eos))
        {
            // LlamaTokenizerFast.update_post_processor: "<s>:0 $A:0 </s>:0" and, for pairs, "... <s>:1 $B:1 </s>:1".
            var single = new List<TemplatePiece>();
            if (bos && BosId >= 0) single.Add(new TemplatePiece.Special([BosId], [IdToToken(BosId)!]));
            single.Add(new TemplatePiece.Sequence());
            if (eos && EosId >= 0) single.Add(new TemplatePiece.Special([EosId], [IdToToken(EosId)!]));
            List<TemplatePiece> pair = [.. single, .. single.Select(p => p is TemplatePiece.Sequence ? new TemplatePiece.Sequence(IsB: true) { TypeId = 1 } : p with { TypeId = 1 })];
            postProcessor = new TemplateProcessor(single, pair);
        }

        int? Resolve(string? token, string name) => token is null ? null
            : TokenToId(token) ?? throw new TianGongException($"{settings.Source}: `{name}` is `{token}`, which the tokenizer's vocabulary lacks");
    }

    /// <summary>Loads tokenizer.json with no tokenizer_config.json.</summary>
    public static PipelineTokenizer Load(string tokenizerJsonPath) =>
        new(TokenizerJsonReader.Read(tokenizerJsonPath), TokenizerSettings.None(tokenizerJsonPath));

    public int VocabSize { get; }
    public int BosId { get; }
    public int EosId { get; }
    public int PadId { get; }
    public IReadOnlyList<string> SpecialTokens { get; }
    public ChatTemplate? ChatTemplate { get; }

    public int? TokenToId(string token) => addedByContent.TryGetValue(token, out int id) ? id : model.TokenToId(token);

    /// <summary>The token string of an id (an added token's content, else the model's spelling); null when no token has it.</summary>
    public string? IdToToken(int id) => addedById.TryGetValue(id, out var token) ? token.Content : model.IdToToken(id);

    public int[] Encode(string text) => Encode(text, addSpecialTokens: false);

    public int[] Encode(string text, bool addSpecialTokens) => [.. EncodeToTokens(text, addSpecialTokens).Select(t => t.Id)];

    /// <summary>The tokens of <paramref name="text"/> with their spans in it (UTF-16 indices; post-processor tokens have empty spans).</summary>
    public IReadOnlyList<EncodedToken> EncodeToTokens(string text, bool addSpecialTokens) => EncodeToTokens(text, null, addSpecialTokens);

    /// <summary>
    /// A pair of texts (e.g. query and passage for a cross-encoder) as HF's <c>encode(text, pair)</c>: each is
    /// tokenized on its own, then the post-processor's pair template joins them and sets type ids (spans are
    /// indices into each token's own text).
    /// </summary>
    public IReadOnlyList<EncodedToken> EncodeToTokens(string text, string? pair, bool addSpecialTokens)
    {
        var encodings = new List<List<EncodedToken>> { Tokenize(text, typeId: 0) };
        if (pair is not null) encodings.Add(Tokenize(pair, typeId: 1)); // as HF's encode_single_sequence(pair, 1)
        if (postProcessor is not null) encodings = postProcessor.Process(encodings, addSpecialTokens);
        return [.. encodings.SelectMany(e => e)];
    }

    /// <summary>The ids of a pair of texts (see <see cref="EncodeToTokens(string, string?, bool)"/>).</summary>
    public int[] EncodePair(string text, string pair, bool addSpecialTokens) => [.. EncodeToTokens(text, pair, addSpecialTokens).Select(t => t.Id)];

    private List<EncodedToken> Tokenize(string text, int typeId)
    {
        text = WithoutLoneSurrogates(text);
        var pieces = new PreTokenizedString(NormalizedString.FromOriginal(text));
        pieces.Split((_, s) => added.SplitOriginal(s));
        pieces.Split((_, s) => added.SplitNormalized(normalizer?.Normalize(s) ?? s));
        preTokenizer?.PreTokenize(pieces);
        var result = new List<EncodedToken>();
        foreach (var piece in pieces.Splits)
        {
            var s = piece.Normalized;
            foreach (var token in piece.Tokens ?? model.Tokenize(s.Text))
            {
                var (start, end) = s.OriginalSpan(token.Start, token.End);
                result.Add(new EncodedToken(token.Id, token.Value, start, end, Special: piece.Tokens is not null && specialIds.Contains(token.Id), typeId, SequenceIndex: typeId));
            }
        }
        return result;
    }

    /// <summary>HF takes Rust strings, which cannot hold lone surrogates; they become U+FFFD as UTF-8 encoding would make them.</summary>
    private static string WithoutLoneSurrogates(string text)
    {
        if (text.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF') < 0) return text;
        var builder = new StringBuilder(text.Length);
        foreach (var rune in text.EnumerateRunes()) builder.Append(rune.ToString()); // invalid UTF-16 enumerates as U+FFFD
        return builder.ToString();
    }

    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false)
    {
        var tokens = new List<string>(ids.Length);
        foreach (int id in ids)
        {
            if (skipSpecialTokens && specialIds.Contains(id)) continue;
            tokens.Add(IdToToken(id) ?? throw new ArgumentOutOfRangeException(nameof(ids), id, $"Token ids run from 0 to {VocabSize - 1} and this one has no token."));
        }
        return decoder is null ? string.Join(' ', tokens) : string.Concat(decoder.DecodeChain(tokens));
    }

    public bool IsByteFallback(int id) =>
        model.IdToToken(id) is { } token && ByteFallbackDecoder.ByteOf(token) >= 0 && !addedById.ContainsKey(id)
        && DecoderSteps(decoder).Any(d => d is ByteFallbackDecoder);

    /// <summary>
    /// The bytes token <paramref name="id"/> stands for: byte-level tokens unspelled, byte-fallback tokens their byte,
    /// ▁ a space, WordPiece continuations without ## and other WordPiece tokens with a leading space; added tokens their content.
    /// </summary>
    public byte[] TokenBytes(int id)
    {
        if (addedById.TryGetValue(id, out var addedToken)) return Encoding.UTF8.GetBytes(addedToken.Content);
        string token = model.IdToToken(id) ?? throw new ArgumentOutOfRangeException(nameof(id), id, $"Token ids run from 0 to {VocabSize - 1} and this one has no token.");
        foreach (var step in DecoderSteps(decoder))
        {
            switch (step)
            {
                case ByteLevelDecoder:
                    return ByteLevelAlphabet.Unspell(token) ?? Encoding.UTF8.GetBytes(token);
                case ByteFallbackDecoder when ByteFallbackDecoder.ByteOf(token) is var b && b >= 0:
                    return [(byte)b];
                case ReplaceDecoder or StripDecoder or BpeDecoder:
                    token = step.DecodeChain([token, token])[1]; // as a token in the middle of the text
                    break;
                case MetaspaceDecoder metaspace:
                    token = token.Replace(metaspace.Replacement, ' ');
                    break;
                case WordPieceDecoder wordPiece:
                    token = token.StartsWith(wordPiece.Prefix, StringComparison.Ordinal) ? token[wordPiece.Prefix.Length..] : " " + token;
                    break;
            }
        }
        return Encoding.UTF8.GetBytes(token);
    }

    private static IReadOnlyList<TemplatePiece>? SingleTemplate(IPostProcessor? processor) => processor switch
    {
        TemplateProcessor t => t.Single,
        BertProcessor b => [b.Cls, new TemplatePiece.Sequence(), b.Sep],
        RobertaProcessor r => [r.Cls, new TemplatePiece.Sequence(), r.Sep],
        SequenceProcessor s => s.Processors.Select(SingleTemplate).FirstOrDefault(t => t is not null),
        _ => null,
    };

    private static IEnumerable<IDecoder> DecoderSteps(IDecoder? decoder) => decoder switch
    {
        null => [],
        SequenceDecoder sequence => sequence.Decoders.SelectMany(DecoderSteps),
        _ => [decoder],
    };
}

/// <summary>What tokenizer_config.json adds to tokenizer.json (all empty without one).</summary>
internal sealed record TokenizerSettings(string Source, bool HasConfig, string? BosToken, string? EosToken, string? PadToken,
    IReadOnlyList<string> SpecialTokenNames, IReadOnlyList<AddedToken> ExtraAddedTokens, IPostProcessor? PostProcessorOverride,
    ChatTemplate? ChatTemplate)
{
    public static TokenizerSettings None(string source) => new(source, false, null, null, null, [], [], null, ChatTemplate.Default);

    /// <summary>Whether to put bos in front and eos at the end instead of the file's post-processor (Llama/Gemma classes); null keeps the file's.</summary>
    public (bool Bos, bool Eos)? BosEosOverride { get; init; }
}
