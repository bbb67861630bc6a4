namespace TianGong.Data;

/// <summary>
/// Stateless hashing with the SplitMix64 finaliser (Steele, Lea and Flood 2014). Sampling and the train/val
/// split are pure functions of their inputs, so resuming at step n gives exactly the batch an unbroken run would have.
/// </summary>
internal static class SplitMix64
{
    private const ulong Gamma = 0x9E3779B97F4A7C15;

    public static ulong Mix(ulong z)
    {
        z += Gamma;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
        return z ^ (z >> 31);
    }

    // Chained, not XOR-ed together, so (a, b) and (b, a) hash differently.
    public static ulong Hash(ulong a, ulong b) => Mix(Mix(a) ^ b);

    public static ulong Hash(ulong a, ulong b, ulong c) => Mix(Hash(a, b) ^ c);

    /// <summary>A uniform double in [0, 1) from the top 53 bits.</summary>
    public static double ToUnit(ulong h) => (h >> 11) * (1.0 / (1UL << 53));

    /// <summary>Maps a hash onto [0, range) by multiply-high (Lemire), without the low-bit bias of modulo.</summary>
    public static ulong ToRange(ulong h, ulong range) => (ulong)(((UInt128)h * range) >> 64);
}
