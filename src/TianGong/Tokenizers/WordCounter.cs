using System.Runtime.InteropServices;

namespace TianGong.Tokenizers;

/// <summary>
/// Counts distinct pre-tokens ("words") over the corpus in parallel, so BPE training works on a few
/// hundred thousand distinct words with frequencies instead of every occurrence.
/// </summary>
internal static class WordCounter
{
    public static Dictionary<string, long> Count(IEnumerable<string> texts, IReadOnlyList<string> specialTokens)
    {
        var total = new Dictionary<string, long>(StringComparer.Ordinal);
        var gate = new object();
        Parallel.ForEach(
            texts,
            () => new Dictionary<string, long>(StringComparer.Ordinal),
            (text, _, local) =>
            {
                CountText(text, specialTokens, local);
                return local;
            },
            local =>
            {
                lock (gate)
                {
                    foreach (var (word, count) in local)
                        CollectionsMarshal.GetValueRefOrAddDefault(total, word, out _) += count;
                }
            });
        return total;
    }

    private static void CountText(string text, IReadOnlyList<string> specialTokens, Dictionary<string, long> counts)
    {
        // Span lookups: a word seen before costs no string allocation.
        var lookup = counts.GetAlternateLookup<ReadOnlySpan<char>>();
        ReadOnlySpan<char> rest = text;
        while (!rest.IsEmpty)
        {
            // Special tokens are never learned from: the text on either side is counted separately.
            int special = Gpt2PreTokenizer.FindSpecial(rest, specialTokens, out int at);
            var segment = special < 0 ? rest : rest[..at];
            foreach (var (start, length) in Gpt2PreTokenizer.Pieces(segment))
                CollectionsMarshal.GetValueRefOrAddDefault(lookup, segment.Slice(start, length), out _)++;
            rest = special < 0 ? [] : rest[(at + specialTokens[special].Length)..];
        }
    }
}
