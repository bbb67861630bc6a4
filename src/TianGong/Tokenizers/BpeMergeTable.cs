namespace TianGong.Tokenizers;

/// <summary>One learned merge: tokens <c>Left</c> and <c>Right</c> (ids) become <c>Result</c>.</summary>
internal readonly record struct BpeMerge(int Left, int Right, int Result);

/// <summary>
/// Applies ranked merges to a piece's byte tokens the GPT-2 way: repeatedly merge every occurrence
/// (left to right) of the adjacent pair with the lowest rank. Shared by training checks and run time.
/// </summary>
internal sealed class BpeMergeTable
{
    private readonly Dictionary<long, int> rankOf;
    private readonly BpeMerge[] merges;

    public BpeMergeTable(IReadOnlyList<BpeMerge> merges)
    {
        this.merges = [.. merges];
        rankOf = new Dictionary<long, int>(merges.Count, PairKeyComparer.Instance);
        // A pair listed twice keeps its first (lowest) rank, as in HF's BPE model.
        for (int rank = 0; rank < merges.Count; rank++)
            rankOf.TryAdd(PairKey(merges[rank].Left, merges[rank].Right), rank);
    }

    public static long PairKey(int left, int right) => ((long)left << 32) | (uint)right;

    /// <summary>Merges <paramref name="symbols"/> in place and returns how many remain.</summary>
    public int Apply(Span<int> symbols)
    {
        int n = symbols.Length;
        while (n > 1)
        {
            int best = int.MaxValue;
            for (int i = 0; i + 1 < n; i++)
            {
                if (rankOf.TryGetValue(PairKey(symbols[i], symbols[i + 1]), out int rank) && rank < best)
                    best = rank;
            }
            if (best == int.MaxValue) break;

            var (left, right, result) = merges[best];
            int j = 0;
            for (int i = 0; i < n; j++)
            {
                if (i + 1 < n && symbols[i] == left && symbols[i + 1] == right)
                {
                    symbols[j] = result;
                    i += 2;
                }
                else
                {
                    symbols[j] = symbols[i++];
                }
            }
            n = j;
        }
        return n;
    }
}
