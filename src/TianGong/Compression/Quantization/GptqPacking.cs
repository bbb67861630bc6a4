namespace TianGong.Compression.Quantization;

/// <summary>
/// The GPTQ (v1, "gptq") checkpoint layout, as AutoGPTQ's and gptqmodel's torch QuantLinear.pack write it and as
/// transformers/optimum unpack it:
/// <list type="bullet">
/// <item><c>qweight</c> int32 (in / (32/bits), out): value q[i, o] sits in row i / (32/bits), bits (i mod 32/bits)·bits
/// upwards: consecutive inputs of one output share an int32.</item>
/// <item><c>qzeros</c> int32 (groups, out / (32/bits)): packed along outputs the same way, each stored as zero − 1
/// (the v1 convention; readers add one back and mask to <c>bits</c>, so a zero point of 0 is stored as 2^bits − 1).</item>
/// <item><c>scales</c> fp16 (groups, out); <c>g_idx</c> int32 (in): the group of each input, i / group_size.</item>
/// </list>
/// w[i, o] = scales[g, o] · (q[i, o] − zero[g, o]) with g = g_idx[i]. Hand-written because no .NET library reads
/// or writes this layout.
/// </summary>
public static class GptqPacking
{
    /// <summary>Packs q (in, out), row-major, into qweight (in / pack, out).</summary>
    public static int[] PackWeight(ReadOnlySpan<int> q, long inFeatures, long outFeatures, int bits)
    {
        int pack = 32 / bits;
        CheckPackable(inFeatures, pack, "in_features");
        var packed = new int[inFeatures / pack * outFeatures];
        for (long i = 0; i < inFeatures; i++)
        {
            long row = i / pack * outFeatures;
            int shift = (int)(i % pack) * bits;
            for (long o = 0; o < outFeatures; o++)
                packed[row + o] |= (int)((uint)q[(int)(i * outFeatures + o)] << shift);
        }
        return packed;
    }

    /// <summary>q (in, out) from qweight: the inverse of <see cref="PackWeight"/>.</summary>
    public static int[] UnpackWeight(ReadOnlySpan<int> qweight, long inFeatures, long outFeatures, int bits)
    {
        int pack = 32 / bits;
        uint mask = (1u << bits) - 1;
        var q = new int[inFeatures * outFeatures];
        for (long i = 0; i < inFeatures; i++)
        {
            long row = i / pack * outFeatures;
            int shift = (int)(i % pack) * bits;
            for (long o = 0; o < outFeatures; o++)
                q[i * outFeatures + o] = (int)(((uint)qweight[(int)(row + o)] >> shift) & mask);
        }
        return q;
    }

    /// <summary>
    /// Packs zero points (groups, out) into qzeros (groups, out / pack), each stored as zero − 1. The reference ORs the
    /// unmasked uint32 (zero − 1) into place, so a zero point of 0 (−1, all ones) spills into the fields above it; we
    /// mask each field to <c>bits</c>, which writes the same bytes whenever the reference's are readable.
    /// </summary>
    public static int[] PackZeros(ReadOnlySpan<int> zeros, long groups, long outFeatures, int bits)
    {
        int pack = 32 / bits;
        CheckPackable(outFeatures, pack, "out_features");
        uint mask = (1u << bits) - 1;
        long columns = outFeatures / pack;
        var packed = new int[groups * columns];
        for (long g = 0; g < groups; g++)
            for (long o = 0; o < outFeatures; o++)
                packed[g * columns + o / pack] |= (int)((((uint)zeros[(int)(g * outFeatures + o)] - 1) & mask) << (int)(o % pack * bits));
        return packed;
    }

    /// <summary>Zero points (groups, out) from qzeros: field + 1, masked to <c>bits</c> (so a stored 2^bits − 1 is 0).</summary>
    public static int[] UnpackZeros(ReadOnlySpan<int> qzeros, long groups, long outFeatures, int bits)
    {
        int pack = 32 / bits;
        uint mask = (1u << bits) - 1;
        long columns = outFeatures / pack;
        var zeros = new int[groups * outFeatures];
        for (long g = 0; g < groups; g++)
            for (long o = 0; o < outFeatures; o++)
                zeros[g * outFeatures + o] = (int)(((((uint)qzeros[(int)(g * columns + o / pack)] >> (int)(o % pack * bits)) & mask) + 1) & mask);
        return zeros;
    }

    /// <summary>g_idx for groups of <paramref name="groupSize"/> consecutive inputs (no activation order).</summary>
    public static int[] GroupIndex(long inFeatures, int groupSize)
    {
        var gIdx = new int[inFeatures];
        for (long i = 0; i < inFeatures; i++) gIdx[i] = (int)(i / groupSize);
        return gIdx;
    }

    public static long GroupCount(long inFeatures, int groupSize) => (inFeatures + groupSize - 1) / groupSize;

    private static void CheckPackable(long features, int pack, string what)
    {
        if (features % pack != 0)
            throw new TianGongException($"{what} {features} is not a multiple of {pack}, so it cannot be packed {pack} to an int32");
    }
}
