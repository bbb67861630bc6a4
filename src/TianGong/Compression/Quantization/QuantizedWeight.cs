namespace TianGong.Compression.Quantization;

/// <summary>
/// One linear layer's weight in the GPTQ layout (see <see cref="GptqPacking"/>): packed integers, per-group fp16
/// scales and zero points, ready to become the <c>qweight</c>, <c>qzeros</c>, <c>scales</c> and <c>g_idx</c> tensors.
/// </summary>
public sealed record QuantizedWeight(long InFeatures, long OutFeatures, GptqConfig Config, int[] QWeight, int[] QZeros, Half[] Scales, int[] GIdx)
{
    public int GroupSize => Config.GroupSizeFor(InFeatures);

    public long Groups => GptqPacking.GroupCount(InFeatures, GroupSize);

    /// <summary>
    /// Round-to-nearest quantization of <paramref name="weight"/> (out, in), row-major, with GPTQ's quantizer: per
    /// (group, output) the range [min(x, 0), max(x, 0)] (symmetric: ±max|x|) is split into 2^bits − 1 steps; symmetric
    /// zero points are 2^(bits−1). The scale is rounded to fp16 before the integers are chosen, as pack() recomputes
    /// them from the fp16 scales, so what is stored is the nearest grid point of the grid that is stored.
    /// </summary>
    public static QuantizedWeight Rtn(ReadOnlySpan<float> weight, long inFeatures, long outFeatures, GptqConfig config)
    {
        int groupSize = config.GroupSizeFor(inFeatures);
        long groups = GptqPacking.GroupCount(inFeatures, groupSize);
        var scales = new Half[groups * outFeatures];
        var zeros = new int[groups * outFeatures];
        var q = new int[inFeatures * outFeatures];                                         // (in, out)
        int maxq = config.MaxQ;
        for (long o = 0; o < outFeatures; o++)
        {
            var row = weight.Slice((int)(o * inFeatures), (int)inFeatures);
            for (long g = 0; g < groups; g++)
            {
                int start = (int)(g * groupSize), end = (int)Math.Min(inFeatures, start + groupSize);
                var (scale, zero) = ScaleAndZero(row[start..end], maxq, config.Sym);
                scales[g * outFeatures + o] = scale;
                zeros[g * outFeatures + o] = zero;
                float s = (float)scale;
                for (int i = start; i < end; i++)
                    q[i * outFeatures + o] = Math.Clamp((int)MathF.Round(row[i] / s, MidpointRounding.ToEven) + zero, 0, maxq);
            }
        }
        return new QuantizedWeight(inFeatures, outFeatures, config,
            GptqPacking.PackWeight(q, inFeatures, outFeatures, config.Bits),
            GptqPacking.PackZeros(zeros, groups, outFeatures, config.Bits),
            scales, GptqPacking.GroupIndex(inFeatures, groupSize));
    }

    /// <summary>GPTQ's Quantizer.find_params for one group of one output channel.</summary>
    internal static (Half Scale, int Zero) ScaleAndZero(ReadOnlySpan<float> values, int maxq, bool sym)
    {
        float min = 0, max = 0;
        foreach (var v in values) { min = Math.Min(min, v); max = Math.Max(max, v); }
        if (sym)
        {
            max = Math.Max(-min, max);
            if (min < 0) min = -max;
        }
        if (min == 0 && max == 0) (min, max) = (-1, 1);
        var scale = (Half)((max - min) / maxq);
        if (scale == Half.Zero) scale = Half.Epsilon; // a group far below fp16's range: any nonzero scale rounds it to the zero point
        int zero = sym ? (maxq + 1) / 2 : Math.Clamp((int)MathF.Round(-min / (float)scale, MidpointRounding.ToEven), 0, maxq);
        return (scale, zero);
    }

    /// <summary>The weight these integers stand for, (out, in) row-major, as a reader dequantizes it.</summary>
    public float[] Dequantize()
    {
        var q = GptqPacking.UnpackWeight(QWeight, InFeatures, OutFeatures, Config.Bits);
        var zeros = GptqPacking.UnpackZeros(QZeros, Groups, OutFeatures, Config.Bits);
        var w = new float[OutFeatures * InFeatures];
        for (long i = 0; i < InFeatures; i++)
        {
            long g = GIdx[i];
            for (long o = 0; o < OutFeatures; o++)
                w[o * InFeatures + i] = (float)Scales[g * OutFeatures + o] * (q[i * OutFeatures + o] - zeros[g * OutFeatures + o]);
        }
        return w;
    }
}
