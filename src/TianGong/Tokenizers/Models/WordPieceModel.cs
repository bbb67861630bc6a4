using System.Text;

namespace TianGong.Tokenizers;

/// <summary>
/// HF's <c>WordPiece</c>: greedy longest match from the left, continuations spelled with the prefix (##); a word with
/// a part that matches nothing, or longer than <c>max_input_chars_per_word</c> code points, is the unk token.
/// </summary>
internal sealed class WordPieceModel(Dictionary<string, int> vocab, string unkToken, string prefix, int maxInputCharsPerWord, string where)
    : ITokenizerModel
{
    private readonly string?[] vocabById = VocabById(vocab);
    private readonly int unkId = vocab.TryGetValue(unkToken, out int id) ? id
        : throw new TianGongException($"{where}.unk_token: `{unkToken}` is not in the vocabulary");

    internal static string?[] VocabById(Dictionary<string, int> vocab)
    {
        var byId = new string?[vocab.Count == 0 ? 0 : vocab.Values.Max() + 1];
        foreach (var (token, id) in vocab) byId[id] = token;
        return byId;
    }

    public int VocabSize => vocabById.Length;

    public int? TokenToId(string token) => vocab.TryGetValue(token, out int id) ? id : null;

    public string? IdToToken(int id) => (uint)id < (uint)vocabById.Length ? vocabById[id] : null;

    public IReadOnlyList<Token> Tokenize(string piece)
    {
        int codePoints = 0;
        foreach (var _ in piece.EnumerateRunes()) codePoints++;
        if (codePoints > maxInputCharsPerWord) return [new Token(unkId, unkToken, 0, piece.Length)];
        var tokens = new List<Token>();
        int start = 0;
        while (start < piece.Length)
        {
            int end = piece.Length;
            Token? found = null;
            while (start < end)
            {
                string candidate = start > 0 ? prefix + piece[start..end] : piece[start..end];
                if (vocab.TryGetValue(candidate, out int tokenId)) { found = new Token(tokenId, candidate, start, end); break; }
                end -= char.IsLowSurrogate(piece[end - 1]) && end - 2 >= start ? 2 : 1;
            }
            if (found is null) return [new Token(unkId, unkToken, 0, piece.Length)];
            tokens.Add(found.Value);
            start = end;
        }
        return tokens;
    }
}

/// <summary>HF's <c>WordLevel</c>: the whole piece is one vocabulary entry, else the unk token.</summary>
internal sealed class WordLevelModel(Dictionary<string, int> vocab, string unkToken, string where) : ITokenizerModel
{
    private readonly string?[] vocabById = WordPieceModel.VocabById(vocab);

    public int VocabSize => vocabById.Length;

    public int? TokenToId(string token) => vocab.TryGetValue(token, out int id) ? id : null;

    public string? IdToToken(int id) => (uint)id < (uint)vocabById.Length ? vocabById[id] : null;

    public IReadOnlyList<Token> Tokenize(string piece)
    {
        if (vocab.TryGetValue(piece, out int id)) return [new Token(id, piece, 0, piece.Length)];
        if (vocab.TryGetValue(unkToken, out int unk)) return [new Token(unk, unkToken, 0, piece.Length)];
        throw new TianGongException($"{where}: `{piece}` is not in the WordLevel vocabulary and the unk token `{unkToken}` is not either");
    }
}

/// <summary>
/// HF's <c>Unigram</c> (SentencePiece): the segmentation with the highest total score (Viterbi over all vocabulary
/// matches); a code point no piece covers costs the lowest score minus 10 and is the unk token, consecutive unknowns
/// fused into one; with <c>byte_fallback</c> an unknown piece becomes its byte tokens instead.
/// </summary>
internal sealed class UnigramModel : ITokenizerModel
{
    private const double UnkPenalty = 10.0;
    private readonly Dictionary<string, int> tokenToId;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> lookup;
    private readonly string[] pieces;
    private readonly double[] scores;
    private readonly int? unkId;
    private readonly bool byteFallback;
    private readonly double minScore;
    private readonly int maxPieceLength;
    private readonly TokenCache cache = new();

    public UnigramModel(IReadOnlyList<(string Piece, double Score)> vocab, int? unkId, bool byteFallback, string where)
    {
        if (unkId is { } u && (u < 0 || u >= vocab.Count))
            throw new TianGongException($"{where}.unk_id: {u} is outside the vocabulary (0..{vocab.Count - 1})");
        pieces = new string[vocab.Count];
        scores = new double[vocab.Count];
        tokenToId = new Dictionary<string, int>(vocab.Count, StringComparer.Ordinal);
        minScore = double.PositiveInfinity;
        for (int i = 0; i < vocab.Count; i++)
        {
            (pieces[i], scores[i]) = vocab[i];
            tokenToId[pieces[i]] = i; // a repeated piece keeps its last id, as HF's map does
            minScore = Math.Min(minScore, scores[i]);
            maxPieceLength = Math.Max(maxPieceLength, pieces[i].Length);
        }
        lookup = tokenToId.GetAlternateLookup<ReadOnlySpan<char>>();
        (this.unkId, this.byteFallback) = (unkId, byteFallback);
    }

    public int VocabSize => pieces.Length;

    public int? TokenToId(string token) => tokenToId.TryGetValue(token, out int id) ? id : null;

    public string? IdToToken(int id) => (uint)id < (uint)pieces.Length ? pieces[id] : null;

    public IReadOnlyList<Token> Tokenize(string piece)
    {
        if (piece.Length == 0) return [];
        if (cache.TryGet(piece, out var cached)) return cached;
        var result = ToTokens(piece, BestSegmentation(piece));
        cache.Add(piece, result);
        return result;
    }

    /// <summary>The best path's pieces as (start, end) char ranges, unknown runs fused.</summary>
    private List<(int Start, int End, bool Unknown)> BestSegmentation(string s)
    {
        double unkScore = minScore - UnkPenalty;
        int n = s.Length;
        var bestScore = new double[n + 1];
        var bestStart = new int[n + 1];
        var bestId = new int[n + 1];
        Array.Fill(bestStart, -1);
        for (int start = 0; start < n;)
        {
            double here = bestScore[start];
            int charLength = char.IsHighSurrogate(s[start]) && start + 1 < n && char.IsLowSurrogate(s[start + 1]) ? 2 : 1;
            bool hasSingle = false;
            for (int length = 1; length <= maxPieceLength && start + length <= n; length++)
            {
                if (!lookup.TryGetValue(s.AsSpan(start, length), out int id)) continue;
                int end = start + length;
                double candidate = here + scores[id];
                if (bestStart[end] < 0 || candidate > bestScore[end]) (bestScore[end], bestStart[end], bestId[end]) = (candidate, start, id);
                if (length == charLength) hasSingle = true;
            }
            if (!hasSingle)
            {
                int end = start + charLength;
                double candidate = here + unkScore;
                if (bestStart[end] < 0 || candidate > bestScore[end])
                    (bestScore[end], bestStart[end], bestId[end]) = (candidate, start, unkId ?? throw new TianGongException("Unigram: a character matches no piece and the model has no `unk_id`"));
            }
            start += charLength;
        }
        var path = new List<(int, int, bool)>();
        for (int end = n; end > 0;)
        {
            int start = bestStart[end];
            bool unknown = unkId is { } u && bestId[end] == u;
            if (unknown && path.Count > 0 && path[^1].Item3) path[^1] = (start, path[^1].Item2, true);
            else path.Add((start, end, unknown));
            end = start;
        }
        path.Reverse();
        return path;
    }

    private Token[] ToTokens(string s, List<(int Start, int End, bool Unknown)> path)
    {
        var tokens = new List<Token>(path.Count);
        foreach (var (start, end, _) in path)
        {
            string text = s[start..end];
            if (tokenToId.TryGetValue(text, out int id)) { tokens.Add(new Token(id, text, start, end)); continue; }
            if (byteFallback && ByteTokens(text, start, end) is { } bytes) { tokens.AddRange(bytes); continue; }
            tokens.Add(new Token(unkId!.Value, text, start, end)); // HF keeps the text as the token's value
        }
        return [.. tokens];
    }

    private List<Token>? ByteTokens(string text, int start, int end)
    {
        var result = new List<Token>();
        foreach (byte b in Encoding.UTF8.GetBytes(text))
        {
            string name = $"<0x{b:X2}>";
            if (!tokenToId.TryGetValue(name, out int id)) return null;
            result.Add(new Token(id, name, start, end));
        }
        return result;
    }
}
