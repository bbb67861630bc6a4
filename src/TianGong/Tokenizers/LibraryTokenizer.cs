using System.Text;
using Microsoft.ML.Tokenizers;

namespace TianGong.Tokenizers;

/// <summary>
/// An <see cref="ITextTokenizer"/> over a Microsoft.ML.Tokenizers tokenizer (SentencePiece):
/// the library encodes and decodes; we keep the vocabulary, special tokens and each token's bytes.
/// </summary>
internal sealed class LibraryTokenizer : ITextTokenizer
{
    private readonly Func<string, IReadOnlyList<int>> encode;
    private readonly Func<IEnumerable<int>, string> decode;
    private readonly Dictionary<string, int> tokenToId;
    private readonly byte[]?[] bytesById;
    private readonly bool[] isSpecial;

    /// <param name="vocab">Every token as the file spells it, with its id.</param>
    /// <param name="specialTokens">Contents of the special tokens (each must be in <paramref name="vocab"/>).</param>
    /// <param name="tokenBytes">The bytes a non-special token stands for, from its spelling.</param>
    public LibraryTokenizer(IReadOnlyDictionary<string, int> vocab, IEnumerable<string> specialTokens, Func<string, byte[]> tokenBytes,
        Func<string, IReadOnlyList<int>> encode, Func<IEnumerable<int>, string> decode, int bosId, int eosId, int padId)
    {
        this.encode = encode;
        this.decode = decode;
        tokenToId = new Dictionary<string, int>(vocab, StringComparer.Ordinal);
        int size = vocab.Count == 0 ? 0 : vocab.Values.Max() + 1;
        bytesById = new byte[]?[size];
        isSpecial = new bool[size];
        var specials = specialTokens.ToHashSet(StringComparer.Ordinal);
        foreach (var (token, id) in vocab)
        {
            isSpecial[id] = specials.Contains(token);
            bytesById[id] = isSpecial[id] ? Encoding.UTF8.GetBytes(token) : tokenBytes(token);
        }
        SpecialTokens = [.. specials.Where(vocab.ContainsKey).OrderBy(t => vocab[t])];
        (BosId, EosId, PadId) = (bosId, eosId, padId);
    }

    public int VocabSize => bytesById.Length;
    public int BosId { get; }
    public int EosId { get; }
    public int PadId { get; }
    public IReadOnlyList<string> SpecialTokens { get; }

    /// <summary>These formats belong to models that carry their own template or none; the loader attaches it.</summary>
    public ChatTemplate? ChatTemplate => null;

    public int? TokenToId(string token) => tokenToId.TryGetValue(token, out int id) ? id : null;

    public int[] Encode(string text) => [.. encode(text)];

    /// <summary>SentencePiece (Llama style) puts bos in front; ConfiguredTokenizer applies tokenizer_config.json's flags instead.</summary>
    public int[] Encode(string text, bool addSpecialTokens) => addSpecialTokens && BosId >= 0 ? [BosId, .. encode(text)] : Encode(text);

    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false)
    {
        var kept = new List<int>(ids.Length);
        foreach (int id in ids)
        {
            CheckId(id);
            if (!(skipSpecialTokens && isSpecial[id])) kept.Add(id);
        }
        return decode(kept);
    }

    public byte[] TokenBytes(int id)
    {
        CheckId(id);
        return (byte[])bytesById[id]!.Clone();
    }

    private void CheckId(int id)
    {
        if ((uint)id >= (uint)bytesById.Length || bytesById[id] is null)
            throw new ArgumentOutOfRangeException(nameof(id), id, $"Token ids run from 0 to {bytesById.Length - 1} and this one has no token.");
    }

    /// <summary>
    /// A SentencePiece model. "▁" stands for a space and byte-fallback pieces "&lt;0xAB&gt;" for their byte, so the
    /// concatenation keeps the dummy-prefix space that Decode drops.
    /// </summary>
    public static LibraryTokenizer SentencePiece(SentencePieceTokenizer sp, IEnumerable<string> specialTokens, int padId)
    {
        var vocab = sp.Vocabulary;
        var specials = specialTokens.Concat(sp.SpecialTokens?.Keys ?? [])
            .Append(sp.BeginningOfSentenceToken).Append(sp.EndOfSentenceToken).Append(sp.UnknownToken);
        return new LibraryTokenizer(vocab, specials, token => SentencePieceBytes(token, sp.ByteFallback),
            text => sp.EncodeToIds(text, addBeginningOfSentence: false, addEndOfSentence: false, considerPreTokenization: true, considerNormalization: true),
            ids => sp.Decode(ids, considerSpecialTokens: true),
            sp.BeginningOfSentenceId, sp.EndOfSentenceId, padId);
    }

    private static byte[] SentencePieceBytes(string piece, bool byteFallback)
    {
        if (byteFallback && piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece[5] == '>'
            && byte.TryParse(piece.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out byte b))
            return [b];
        return Encoding.UTF8.GetBytes(piece.Replace('\u2581', ' '));
    }
}
