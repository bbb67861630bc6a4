using System.Text;

namespace TianGong.Tokenizers;

/// <summary>
/// HF's <c>BPE</c> model: a piece is split into code points (each looked up with the continuing-subword prefix
/// after the first and the end-of-word suffix on the last), unknown ones become byte tokens (<c>&lt;0x41&gt;</c>,
/// with <c>byte_fallback</c>) or the unk token (fused when <c>fuse_unk</c>), then ranked merges apply, lowest rank
/// first, leftmost first. With <c>ignore_merges</c> a piece that is itself in the vocabulary is one token.
/// </summary>
internal sealed class BpeModel : ITokenizerModel
{
    private readonly Dictionary<string, int> vocab;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> lookup;
    private readonly string?[] vocabById;
    private readonly Dictionary<long, (int Rank, int Result)> merges;
    private readonly string? unkToken, prefix, suffix;
    private readonly bool fuseUnk, byteFallback, ignoreMerges;
    private readonly TokenCache cache = new();
    private readonly int[] byteTokenIds = new int[256];

    public BpeModel(Dictionary<string, int> vocab, IReadOnlyList<(string Left, string Right)> mergeList, string? unkToken,
        string? continuingSubwordPrefix, string? endOfWordSuffix, bool fuseUnk, bool byteFallback, bool ignoreMerges, string where)
    {
        this.vocab = vocab;
        lookup = vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        vocabById = new string?[vocab.Count == 0 ? 0 : vocab.Values.Max() + 1];
        foreach (var (token, id) in vocab) vocabById[id] = token;
        (this.unkToken, prefix, suffix, this.fuseUnk, this.byteFallback, this.ignoreMerges) =
            (unkToken, continuingSubwordPrefix, endOfWordSuffix, fuseUnk, byteFallback, ignoreMerges);
        int prefixLength = continuingSubwordPrefix?.Length ?? 0;
        merges = new Dictionary<long, (int, int)>(mergeList.Count, PairKeyComparer.Instance); // long.GetHashCode is left ^ right: ids collide
        for (int rank = 0; rank < mergeList.Count; rank++)
        {
            var (left, right) = mergeList[rank];
            // The merged token drops the right side's continuing-subword prefix ("a" + "##b" = "ab").
            string merged = left + (prefixLength > 0 && right.StartsWith(continuingSubwordPrefix!, StringComparison.Ordinal) ? right[prefixLength..] : right);
            if (!vocab.TryGetValue(left, out int l) || !vocab.TryGetValue(right, out int r) || !vocab.TryGetValue(merged, out int result))
                throw new TianGongException($"{where}.merges[{rank}]: (`{left}`, `{right}`) uses or makes a token missing from the vocabulary");
            merges.TryAdd(BpeMergeTable.PairKey(l, r), (rank, result));
        }
        for (int b = 0; b < 256; b++)
            byteTokenIds[b] = vocab.TryGetValue($"<0x{b:X2}>", out int id) ? id : -1;
        if (unkToken is not null && !vocab.ContainsKey(unkToken) && !byteFallback)
            throw new TianGongException($"{where}.unk_token: `{unkToken}` is not in the vocabulary");
    }

    public int VocabSize => vocabById.Length;

    public int? TokenToId(string token) => vocab.TryGetValue(token, out int id) ? id : null;

    public string? IdToToken(int id) => (uint)id < (uint)vocabById.Length ? vocabById[id] : null;

    public IReadOnlyList<Token> Tokenize(string piece)
    {
        if (piece.Length == 0) return [];
        if (ignoreMerges && vocab.TryGetValue(piece, out int whole)) return [new Token(whole, piece, 0, piece.Length)];
        if (cache.TryGet(piece, out var cached)) return cached;
        var tokens = MergeWord(piece);
        cache.Add(piece, tokens);
        return tokens;
    }

    private Token[] MergeWord(string word)
    {
        // Symbols: (id, start, end) in chars of the word.
        var ids = new List<int>(word.Length);
        var starts = new List<int>(word.Length);
        var ends = new List<int>(word.Length);
        (int Id, int Start, int End)? unk = null;
        Span<byte> utf8 = stackalloc byte[4];
        for (int i = 0; i < word.Length;)
        {
            var rune = Rune.GetRuneAt(word, i);
            int n = rune.Utf16SequenceLength;
            bool first = i == 0, last = i + n == word.Length;
            bool affixed = (!first && prefix is not null) || (last && suffix is not null);
            int id;
            string? s = null;
            if (!affixed)
            {
                if (!lookup.TryGetValue(word.AsSpan(i, n), out id)) id = -1;
            }
            else
            {
                s = word.Substring(i, n);
                if (!first && prefix is not null) s = prefix + s;
                if (last && suffix is not null) s += suffix;
                if (!vocab.TryGetValue(s, out id)) id = -1;
            }
            if (id >= 0)
            {
                if (unk is { } u) { Add(u.Id, u.Start, u.End); unk = null; }
                Add(id, i, i + n);
            }
            else if (byteFallback && ByteTokens(s ?? word.Substring(i, n)) is { } byteIds)
            {
                // Each byte token spans the whole char (HF gives them one byte each; chars are what we track).
                foreach (int b in byteIds) Add(b, i, i + n);
            }
            else if (unkToken is not null)
            {
                int unkId = vocab.TryGetValue(unkToken, out int found) ? found
                    : throw new TianGongException($"BPE: the unk token `{unkToken}` is not in the vocabulary");
                if (unk is { } u)
                {
                    if (fuseUnk) unk = u with { End = i + n };
                    else { Add(u.Id, u.Start, u.End); unk = (unkId, i, i + n); }
                }
                else unk = (unkId, i, i + n);
            }
            i += n;
        }
        if (unk is { } pending) Add(pending.Id, pending.Start, pending.End);

        MergeAll(ids, starts, ends);
        var tokens = new Token[ids.Count];
        for (int t = 0; t < tokens.Length; t++) tokens[t] = new Token(ids[t], vocabById[ids[t]]!, starts[t], ends[t]);
        return tokens;

        void Add(int id, int start, int end)
        {
            ids.Add(id);
            starts.Add(start);
            ends.Add(end);
        }
    }

    private int[]? ByteTokens(string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        var result = new int[bytes.Length];
        for (int i = 0; i < bytes.Length; i++)
        {
            if (byteTokenIds[bytes[i]] < 0) return null;
            result[i] = byteTokenIds[bytes[i]];
        }
        return result;
    }

    /// <summary>
    /// Repeatedly merges the lowest-ranked adjacent pair (the leftmost among equals). Each pair's rank is looked up
    /// once and again only when a merge changes one of its sides.
    /// </summary>
    private void MergeAll(List<int> ids, List<int> starts, List<int> ends)
    {
        int n = ids.Count;
        if (n < 2) return;
        var rank = new int[n - 1];
        var result = new int[n - 1];
        for (int i = 0; i + 1 < n; i++) (rank[i], result[i]) = PairRank(ids[i], ids[i + 1]);
        while (n > 1)
        {
            int best = -1, bestRank = int.MaxValue;
            for (int i = 0; i + 1 < n; i++)
                if (rank[i] < bestRank) (best, bestRank) = (i, rank[i]);
            if (best < 0) break;
            ids[best] = result[best];
            ends[best] = ends[best + 1];
            ids.RemoveAt(best + 1);
            starts.RemoveAt(best + 1);
            ends.RemoveAt(best + 1);
            n--;
            System.Array.Copy(rank, best + 1, rank, best, n - 1 - best);
            System.Array.Copy(result, best + 1, result, best, n - 1 - best);
            if (best > 0) (rank[best - 1], result[best - 1]) = PairRank(ids[best - 1], ids[best]);
            if (best + 1 < n) (rank[best], result[best]) = PairRank(ids[best], ids[best + 1]);
        }
    }

    private (int Rank, int Result) PairRank(int left, int right) =>
        merges.TryGetValue(BpeMergeTable.PairKey(left, right), out var m) ? m : (int.MaxValue, -1);
}
