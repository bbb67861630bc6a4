using System.Text;

namespace TianGong.Tokenizers;

/// <summary>
/// Builds the tokenizer.json pipeline that transformers builds when it converts a slow SentencePiece tokenizer to a
/// fast one (<c>convert_slow_tokenizer.py</c>), from the ModelProto read directly, so a folder with only
/// <c>tokenizer.model</c> encodes as <c>AutoTokenizer</c> encodes it. Two shapes, chosen by the config's
/// <c>tokenizer_class</c>:
/// <list type="bullet">
/// <item>Llama (<c>LlamaConverter</c>; also CodeLlama, Gemma, and any byte-fallback BPE model without a class):
/// with <c>legacy</c> (the default) the normalizer prepends ▁ (when <c>add_dummy_prefix</c>) and turns spaces into ▁, with no
/// pre-tokenizer; without it a Metaspace pre-tokenizer prepends ▁ to the first piece only. Decoding replaces ▁, fuses
/// byte tokens and strips the one prepended space. The post-processor puts bos in front (add_bos_token, default on).</item>
/// <item>Everything else (<c>SpmConverter</c>: T5, ALBERT-like, unknown classes): the precompiled charsmap, then, with
/// <c>remove_extra_whitespaces</c>, trailing spaces stripped and runs of spaces made one ▁; a Metaspace pre-tokenizer
/// (▁ in front when <c>add_dummy_prefix</c>) and decoder. T5 appends eos.</item>
/// </list>
/// In both, pieces of type CONTROL and UNKNOWN become special added tokens and USER_DEFINED ones ordinary added
/// tokens (never split, never normalized), as transformers adds them; BYTE pieces serve byte fallback. UNUSED pieces
/// stay in the vocabulary, as in the converted tokenizer (SentencePiece itself would never emit them).
/// A BPE model's merges are derived from its pieces as transformers does: every split of a piece into two pieces,
/// ranked by the merged piece's score.
/// </summary>
internal static class SentencePieceConverter
{
    private const string Meta = "\u2581"; // ▁, SentencePiece's whitespace

    /// <summary>The settings of tokenizer_config.json that change a conversion.</summary>
    public sealed record Options(string? TokenizerClass, bool? Legacy, bool? AddPrefixSpace);

    public static TokenizerPipelineParts Convert(SentencePieceModelFile spm, Options options, string where)
    {
        string? cls = options.TokenizerClass?.Replace("Fast", "", StringComparison.Ordinal);
        bool llamaShape = cls is "LlamaTokenizer" or "CodeLlamaTokenizer" or "GemmaTokenizer"
            || (cls is null && spm.Kind == SentencePieceModelFile.ModelKind.Bpe && spm.ByteFallback);
        var model = Model(spm, where);
        var added = AddedTokens(spm);
        return llamaShape ? LlamaShape(spm, options, model, added) : SpmShape(spm, cls, model, added, where);
    }

    private static TokenizerPipelineParts LlamaShape(SentencePieceModelFile spm, Options options, ITokenizerModel model, List<AddedToken> added)
    {
        bool prefix = spm.AddDummyPrefix && (options.AddPrefixSpace ?? true);
        INormalizer? normalizer = null;
        IPreTokenizer? preTokenizer = null;
        if (options.Legacy ?? true)
        {
            var steps = new List<INormalizer>();
            if (prefix) steps.Add(new PrependNormalizer(Meta));
            if (spm.EscapeWhitespaces) steps.Add(new ReplaceNormalizer(CodePointRegex.ForLiteral(" ", "SentencePiece"), Meta));
            normalizer = new SequenceNormalizer(steps);
        }
        else
        {
            preTokenizer = new MetaspacePreTokenizer(new Rune('\u2581'), prefix ? PrependScheme.First : PrependScheme.Never, SplitPieces: false);
        }
        var decoders = new List<IDecoder> { new ReplaceDecoder(CodePointRegex.ForLiteral(Meta, "SentencePiece"), " "), new ByteFallbackDecoder(), new FuseDecoder() };
        if (prefix) decoders.Add(new StripDecoder(' ', 1, 0));
        // LlamaTokenizerFast's own post-processor: bos in front (tokenizer_config.json's add_bos/eos_token may replace it).
        var bos = spm.PieceOf(spm.BosId) is { } b ? new TemplatePiece.Special([spm.BosId], [b]) : null;
        IPostProcessor? post = bos is null ? null
            : new TemplateProcessor([bos, new TemplatePiece.Sequence()], [bos, new TemplatePiece.Sequence(), bos with { TypeId = 1 }, new TemplatePiece.Sequence(IsB: true) { TypeId = 1 }]);
        return new TokenizerPipelineParts(normalizer, preTokenizer, model, post, new SequenceDecoder(decoders), added);
    }

    private static TokenizerPipelineParts SpmShape(SentencePieceModelFile spm, string? cls, ITokenizerModel model, List<AddedToken> added, string where)
    {
        var steps = new List<INormalizer>();
        if (spm.PrecompiledCharsmap.Length > 0) steps.Add(PrecompiledNormalizer.FromBytes(spm.PrecompiledCharsmap, $"{where}: normalizer_spec.precompiled_charsmap"));
        if (spm.RemoveExtraWhitespaces)
        {
            steps.Add(new StripNormalizer(Left: false, Right: true));
            steps.Add(new ReplaceNormalizer(new CodePointRegex(" {2,}", "SentencePiece"), Meta));
        }
        var scheme = spm.AddDummyPrefix ? PrependScheme.Always : PrependScheme.Never;
        IPreTokenizer preTokenizer = new MetaspacePreTokenizer(new Rune('\u2581'), scheme, SplitPieces: true);
        IDecoder decoder = spm.ByteFallback
            ? new SequenceDecoder([new MetaspaceDecoder('\u2581', scheme), new ByteFallbackDecoder(), new FuseDecoder()])
            : new MetaspaceDecoder('\u2581', scheme);
        // T5Converter: "$A </s>" and "$A </s> $B </s>".
        IPostProcessor? post = null;
        if (cls is "T5Tokenizer" && spm.PieceOf(spm.EosId) is { } eos)
        {
            var e = new TemplatePiece.Special([spm.EosId], [eos]);
            post = new TemplateProcessor([new TemplatePiece.Sequence(), e], [new TemplatePiece.Sequence(), e, new TemplatePiece.Sequence(IsB: true) { TypeId = 1 }, e with { TypeId = 1 }]);
        }
        return new TokenizerPipelineParts(new SequenceNormalizer(steps), preTokenizer, model, post, decoder, added);
    }

    private static ITokenizerModel Model(SentencePieceModelFile spm, string where)
    {
        if (spm.Kind == SentencePieceModelFile.ModelKind.Unigram)
            return new UnigramModel([.. spm.Pieces.Select(p => (p.Piece, (double)p.Score))], spm.UnkId, spm.ByteFallback, $"{where}: `model");
        var vocab = new Dictionary<string, int>(spm.Pieces.Count, StringComparer.Ordinal);
        for (int id = 0; id < spm.Pieces.Count; id++) vocab[spm.Pieces[id].Piece] = id;
        return new BpeModel(vocab, Merges(spm.Pieces, vocab), spm.UnkPiece, null, null, fuseUnk: true, spm.ByteFallback,
            ignoreMerges: false, $"{where}: `model");
    }

    /// <summary>
    /// Every (left, right) whose halves and concatenation are pieces, ordered by the concatenation's score (highest
    /// first, as SentencePiece's BPE merges), then its id, then the halves' ids: transformers' SentencePieceExtractor,
    /// whose output is what published tokenizer.json files of Llama 2 and Mistral hold.
    /// </summary>
    internal static List<(string Left, string Right)> Merges(IReadOnlyList<SentencePiece> pieces, Dictionary<string, int> vocab)
    {
        var lookup = vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        var merges = new List<(int Id, int LeftId, int RightId)>();
        for (int id = 0; id < pieces.Count; id++)
        {
            string piece = pieces[id].Piece;
            for (int split = 1; split < piece.Length; split++)
            {
                if (char.IsLowSurrogate(piece[split])) continue; // halves are Python strings of code points
                if (lookup.TryGetValue(piece.AsSpan(0, split), out int left) && lookup.TryGetValue(piece.AsSpan(split), out int right))
                    merges.Add((id, left, right));
            }
        }
        merges.Sort((a, b) =>
        {
            int byScore = pieces[b.Id].Score.CompareTo(pieces[a.Id].Score);
            return byScore != 0 ? byScore : a.Id != b.Id ? a.Id.CompareTo(b.Id) : a.LeftId != b.LeftId ? a.LeftId.CompareTo(b.LeftId) : a.RightId.CompareTo(b.RightId);
        });
        return [.. merges.Select(m => (pieces[m.LeftId].Piece, pieces[m.RightId].Piece))];
    }

    private static List<AddedToken> AddedTokens(SentencePieceModelFile spm)
    {
        var added = new List<AddedToken>();
        for (int id = 0; id < spm.Pieces.Count; id++)
        {
            var p = spm.Pieces[id];
            if (p.Type is SentencePieceType.Control or SentencePieceType.Unknown)
                added.Add(new AddedToken(id, p.Piece, Special: true, Normalized: false));
            else if (p.Type is SentencePieceType.UserDefined)
                added.Add(new AddedToken(id, p.Piece, Special: false, Normalized: false));
        }
        return added;
    }
}
