namespace TianGong.Tokenizers;

/// <summary>
/// Hashes packed (left, right) id pairs. long's own hash is left ^ right, which sends whole families of
/// pairs to one bucket (every (a, b) with equal a ^ b) and made training ~10x slower.
/// </summary>
internal sealed class PairKeyComparer : IEqualityComparer<long>
{
    public static readonly PairKeyComparer Instance = new();

    public bool Equals(long x, long y) => x == y;

    // Fibonacci hashing: the high bits of the product mix every input bit.
    public int GetHashCode(long key) => (int)(((ulong)key * 0x9E3779B97F4A7C15UL) >> 32);
}
