using System.Runtime.InteropServices;
using System.Text;

namespace TianGong.Tokenizers;

/// <summary>
/// The BPE merge loop over counted words, as HF tokenizers' trainer does it: pair counts are kept up to
/// date incrementally, an index from pair → words holding it limits each merge to the words it touches,
/// and a max-heap with lazy deletion picks the next pair. Ties go to the smaller (left id, right id),
/// so the same corpus always yields the same merges.
/// </summary>
internal sealed class BpeMergeLearner
{
    // All words' symbols in one arena; word w lives at [starts[w], starts[w] + lengths[w]).
    private readonly int[] symbols;
    private readonly int[] starts;
    private readonly int[] lengths;
    private readonly long[] frequencies;
    private readonly Dictionary<long, long> pairCounts = new(PairKeyComparer.Instance);
    // May hold stale entries (words that lost the pair); merging such a word finds nothing to do.
    private readonly Dictionary<long, List<int>> pairWords = new(PairKeyComparer.Instance);
    private readonly PriorityQueue<long, (long Count, long Key)> queue = new(PairOrder.Instance);
    private readonly HashSet<long> grownPairs = new(PairKeyComparer.Instance);
    private readonly bool[] isMerged;
    private readonly int firstByteId;

    /// <param name="words">Distinct words with their frequencies, in a fixed (sorted) order.</param>
    /// <param name="firstByteId">Id of byte 0x00; byte b has id firstByteId + b.</param>
    public BpeMergeLearner(IReadOnlyList<KeyValuePair<string, long>> words, int firstByteId)
    {
        this.firstByteId = firstByteId;
        starts = new int[words.Count];
        lengths = new int[words.Count];
        frequencies = new long[words.Count];
        long total = 0;
        for (int w = 0; w < words.Count; w++)
        {
            lengths[w] = Encoding.UTF8.GetByteCount(words[w].Key);
            total += lengths[w];
        }
        if (total > Array.MaxLength)
            throw new TianGongException($"BPE training input has {total} bytes of distinct words; at most {Array.MaxLength} fit.");

        symbols = new int[total];
        var bytes = new byte[lengths.Length == 0 ? 0 : lengths.Max()];
        isMerged = new bool[bytes.Length];
        int offset = 0;
        for (int w = 0; w < words.Count; w++)
        {
            int n = Encoding.UTF8.GetBytes(words[w].Key, bytes);
            for (int i = 0; i < n; i++) symbols[offset + i] = firstByteId + bytes[i];
            starts[w] = offset;
            frequencies[w] = words[w].Value;
            offset += n;
        }
    }

    /// <summary>
    /// Learns merges until <paramref name="maxTokens"/> distinct tokens exist or no pair reaches
    /// <paramref name="minFrequency"/>. <paramref name="tokenBytes"/> starts as the initial tokens (by id) and
    /// gains each new token; two merges that spell the same bytes share one id, as in HF's trainer.
    /// </summary>
    public List<BpeMerge> Learn(List<byte[]> tokenBytes, int maxTokens, int minFrequency)
    {
        var idOf = new Dictionary<string, int>(StringComparer.Ordinal);
        // Special tokens (ids below the byte tokens) are outside BPE: a merge spelling one gets its own id.
        for (int id = firstByteId; id < tokenBytes.Count; id++) idOf.TryAdd(Convert.ToHexString(tokenBytes[id]), id);

        CountInitialPairs();
        var merges = new List<BpeMerge>();
        var lastMergeOf = new int[starts.Length];
        Array.Fill(lastMergeOf, -1);

        while (firstByteId + idOf.Count < maxTokens && queue.TryDequeue(out long key, out var queued))
        {
            long count = pairCounts.GetValueOrDefault(key);
            if (count != queued.Count)
            {
                // Stale entry: the count fell since it was queued. Requeue the live count.
                if (count > 0) queue.Enqueue(key, (count, key));
                continue;
            }
            if (count < minFrequency) break;

            int left = (int)(key >> 32), right = (int)key;
            byte[] merged = [.. tokenBytes[left], .. tokenBytes[right]];
            string name = Convert.ToHexString(merged);
            if (!idOf.TryGetValue(name, out int result))
            {
                result = tokenBytes.Count;
                tokenBytes.Add(merged);
                idOf.Add(name, result);
            }
            merges.Add(new BpeMerge(left, right, result));

            var holders = pairWords[key];
            pairWords.Remove(key);
            foreach (int w in holders)
            {
                if (lastMergeOf[w] == merges.Count) continue;
                lastMergeOf[w] = merges.Count;
                MergeWord(w, left, right, result);
            }
            pairCounts.Remove(key);

            foreach (long grown in grownPairs)
            {
                if (pairCounts.TryGetValue(grown, out long c) && c > 0) queue.Enqueue(grown, (c, grown));
            }
            grownPairs.Clear();
        }
        return merges;
    }

    private void CountInitialPairs()
    {
        for (int w = 0; w < starts.Length; w++)
        {
            var s = symbols.AsSpan(starts[w], lengths[w]);
            for (int i = 0; i + 1 < s.Length; i++) AddPair(BpeMergeTable.PairKey(s[i], s[i + 1]), w, frequencies[w]);
        }
        foreach (var (key, count) in pairCounts) queue.Enqueue(key, (count, key));
    }

    private void MergeWord(int w, int left, int right, int result)
    {
        var s = symbols.AsSpan(starts[w], lengths[w]);
        long frequency = frequencies[w];

        // The pairs that vanish are exactly those touching a merged position; remove each once.
        int lastRemoved = -1;
        for (int i = 0; i + 1 < s.Length;)
        {
            if (s[i] != left || s[i + 1] != right) { i++; continue; }
            for (int p = Math.Max(i - 1, lastRemoved + 1); p <= i + 1 && p + 1 < s.Length; p++)
            {
                RemovePair(BpeMergeTable.PairKey(s[p], s[p + 1]), frequency);
                lastRemoved = p;
            }
            i += 2;
        }
        if (lastRemoved < 0) return;

        int n = 0;
        for (int i = 0; i < s.Length; n++)
        {
            bool merge = i + 1 < s.Length && s[i] == left && s[i + 1] == right;
            s[n] = merge ? result : s[i];
            isMerged[n] = merge;
            i += merge ? 2 : 1;
        }
        lengths[w] = n;

        // The pairs that appear are exactly those touching a merged position in the new word.
        for (int q = 0; q + 1 < n; q++)
        {
            if (!isMerged[q] && !isMerged[q + 1]) continue;
            long key = BpeMergeTable.PairKey(s[q], s[q + 1]);
            AddPair(key, w, frequency);
            grownPairs.Add(key);
        }
    }

    private void AddPair(long key, int w, long frequency)
    {
        CollectionsMarshal.GetValueRefOrAddDefault(pairCounts, key, out _) += frequency;
        ref var holders = ref CollectionsMarshal.GetValueRefOrAddDefault(pairWords, key, out bool exists);
        if (!exists) holders = new List<int>();
        // Words are processed one at a time, so a repeat within a word is always the last entry.
        if (holders!.Count == 0 || holders[^1] != w) holders.Add(w);
    }

    private void RemovePair(long key, long frequency)
    {
        ref long count = ref CollectionsMarshal.GetValueRefOrNullRef(pairCounts, key);
        count -= frequency;
        if (count <= 0)
        {
            pairCounts.Remove(key);
            pairWords.Remove(key);
        }
    }

    /// <summary>Most frequent first; equal counts by ascending (left, right) ids.</summary>
    private sealed class PairOrder : IComparer<(long Count, long Key)>
    {
        public static readonly PairOrder Instance = new();

        public int Compare((long Count, long Key) x, (long Count, long Key) y) =>
            x.Count != y.Count ? y.Count.CompareTo(x.Count) : x.Key.CompareTo(y.Key);
    }
}
