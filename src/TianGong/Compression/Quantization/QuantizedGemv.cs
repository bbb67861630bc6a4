using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace TianGong.Compression.Quantization;

/// <summary>
/// y = x Wᵀ + b for a few rows of x (batch-1 to batch-8 decoding) straight from the GPTQ-packed integers, with
/// AVX-512BW. libtorch has no kernel for this layout, and dequantizing to fp32 before a matmul reads 4× (int8) or 8×
/// (int4) the bytes the packed weight holds: at batch 1 a linear layer is bound by reading its weight.
/// <para>
/// How: each row of x is quantized to int16 in ±8191 (one scale per row, 14 bits: far finer than the weight's own
/// grid); the stored integers are widened to int16 as they are loaded and multiplied with VPMADDWD, whose pairwise
/// sums fit GPTQ's packing (4 or 8 consecutive inputs of one output share an int32), into int32 accumulators flushed to
/// fp32 once per group with the group's scale. Zero points come out as one correction per output:
/// Σ_g scale·zero·Σx_g. .NET 10 exposes 512-bit VNNI only through AVX10 (Avx10v1), which this class of CPUs (AVX-512
/// VNNI without AVX10) does not report, so VPDPBUSD is out of reach and VPMADDWD does the multiply.
/// </para>
/// </summary>
internal sealed unsafe class QuantizedGemv
{
    public const int MaxRows = 8;
    private const int Tile = 32;          // outputs per task: four 8-output loads per packed row
    private const int NarrowTile = 8;     // the last out mod 32 outputs, one load per packed row
    private const int ActivationMax = 8191;

    private readonly IntPtr qweightHandle, qzerosHandle, scalesHandle;
    private readonly Tensor qweight;       // owned by the layer; kept to read its memory
    private readonly long inFeatures, outFeatures;
    private readonly int bits, pack, groupSize, groups, chunkRows;
    private readonly float[] pairScales;   // (groups, 2·out): each output's scale at its two accumulator lanes
    private readonly float[] scaledZeros;  // (groups, out): scale · zero
    private readonly int[] qzeroValues;    // qzeros as stored

    private QuantizedGemv(Tensor qweight, Tensor qzeros, Tensor scales, long inFeatures, long outFeatures, GptqConfig config)
    {
        (this.qweight, this.inFeatures, this.outFeatures) = (qweight, inFeatures, outFeatures);
        (qweightHandle, qzerosHandle, scalesHandle) = (qweight.Handle, qzeros.Handle, scales.Handle);
        (bits, pack, groupSize) = (config.Bits, config.PackFactor, config.GroupSizeFor(inFeatures));
        groups = (int)GptqPacking.GroupCount(inFeatures, groupSize);
        // Packed rows an int32 lane may add before it could overflow: per packed row a lane gains at most
        // pack / 2 products of maxq · 8191 (int8: one VPMADDWD pair; int4: two).
        long perRow = (long)config.MaxQ * ActivationMax * pack / 2;
        chunkRows = (int)Math.Min(int.MaxValue / perRow, 1 << 20);
        using var scope = NewDisposeScope();
        var s = scales.to(ScalarType.Float32).contiguous().data<float>().ToArray();
        qzeroValues = qzeros.contiguous().data<int>().ToArray();
        var z = GptqPacking.UnpackZeros(qzeroValues, groups, outFeatures, bits);
        pairScales = new float[groups * 2 * outFeatures];
        scaledZeros = new float[groups * outFeatures];
        for (int i = 0; i < s.Length; i++)
        {
            pairScales[2 * i] = pairScales[2 * i + 1] = s[i];
            scaledZeros[i] = s[i] * z[i];
        }
    }

    /// <summary>Whether x is something the AVX-512 kernel takes: a few fp32 rows on the CPU, no gradient wanted.</summary>
    public bool Multiplies(Tensor x) =>
        Avx512BW.IsSupported && outFeatures % NarrowTile == 0 && x.device_type == DeviceType.CPU && x.dtype == ScalarType.Float32
        && !x.requires_grad && x.numel() <= MaxRows * inFeatures;

    /// <summary>
    /// The weight (in, out) in <paramref name="dtype"/>, unpacked on all cores: what many rows (a prompt, a
    /// perplexity batch) multiply, where one GEMM beats a GEMV per row. Written out here because the same through
    /// libtorch's integer ops (shift, mask, gather by g_idx) took tens of milliseconds for a 1M-weight layer.
    /// </summary>
    public Tensor Dequantize(ScalarType dtype)
    {
        var w = empty([inFeatures, outFeatures], ScalarType.Float32);
        var p = Pointer(w.bytes);
        var q = Pointer(qweight.bytes);
        var zeros = GptqPacking.UnpackZeros(qzeroValues, groups, outFeatures, bits);
        long packedRows = inFeatures / pack;
        uint mask = (1u << bits) - 1;
        Parallel.For(0, packedRows, r =>
        {
            int* packed = (int*)q + r * outFeatures;
            for (int k = 0; k < pack; k++)
            {
                long i = r * pack + k;
                long g = i / groupSize;
                float* row = (float*)p + i * outFeatures;
                for (long o = 0; o < outFeatures; o++)
                    row[o] = pairScales[2 * (g * outFeatures + o)] * ((int)(((uint)packed[o] >> (k * bits)) & mask) - zeros[g * outFeatures + o]);
            }
        });
        if (dtype == ScalarType.Float32) return w;
        using (w) return w.to(dtype);
    }

    /// <summary>
    /// The tables for these buffers: <paramref name="current"/> when it was built from them, a new one, or null when
    /// the layer doesn't suit them (not on the CPU, activation-order g_idx): then the caller uses libtorch ops.
    /// </summary>
    public static QuantizedGemv? For(QuantizedGemv? current, Tensor qweight, Tensor qzeros, Tensor scales, Tensor gIdx, long inFeatures, long outFeatures, GptqConfig config)
    {
        if (current is not null && current.qweightHandle == qweight.Handle && current.qzerosHandle == qzeros.Handle && current.scalesHandle == scales.Handle)
            return current;
        int groupSize = config.GroupSizeFor(inFeatures);
        if (groupSize % config.PackFactor != 0 || qweight.device_type != DeviceType.CPU || !qweight.is_contiguous())
            return null;
        var expected = GptqPacking.GroupIndex(inFeatures, groupSize);
        if (!gIdx.contiguous().data<int>().ToArray().AsSpan().SequenceEqual(expected)) return null;
        return new QuantizedGemv(qweight, qzeros, scales, inFeatures, outFeatures, config);
    }

    public Tensor Apply(Tensor x, Tensor? bias)
    {
        using var scope = NewDisposeScope();
        var input = x.contiguous();
        int rows = (int)(input.numel() / inFeatures);
        var y = empty([.. x.shape[..^1], outFeatures], ScalarType.Float32);
        var biasValues = bias?.to(ScalarType.Float32).contiguous();
        var xs = Pointer(input.bytes);
        var ys = Pointer(y.bytes);
        var bs = biasValues is null ? 0 : Pointer(biasValues.bytes);
        var w = Pointer(qweight.bytes);
        var activations = new QuantizedRow[rows];
        for (int r = 0; r < rows; r++) activations[r] = QuantizeRow((float*)xs + r * inFeatures);
        int tiles = (int)(outFeatures / Tile) + (int)(outFeatures % Tile / NarrowTile);
        // Small layers are not worth a thread hand-off (a few microseconds each).
        if (outFeatures * inFeatures * rows < 1 << 21)
            for (int t = 0; t < tiles; t++) RunTile(t, rows, activations, w, ys, bs);
        else
            Parallel.For(0, tiles, t => RunTile(t, rows, activations, w, ys, bs));
        return y.MoveToOuterDisposeScope();
    }

    private static nint Pointer(Span<byte> span) => (nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(span));

    /// <summary>One row of x as int16 in ±8191, its scale, per-group sums, and for int4 the even/odd input quads.</summary>
    private sealed record QuantizedRow(float Scale, short[] Values, long[] GroupSums, long[]? EvenQuads, long[]? OddQuads);

    private QuantizedRow QuantizeRow(float* x)
    {
        float max = 0;
        for (long i = 0; i < inFeatures; i++) max = Math.Max(max, Math.Abs(x[i]));
        float scale = max == 0 ? 1 : max / ActivationMax;
        var values = new short[inFeatures];
        var sums = new long[groups];
        for (long i = 0; i < inFeatures; i++)
        {
            values[i] = (short)MathF.Round(x[i] / scale);
            sums[i / groupSize] += values[i];
        }
        if (bits == 8) return new QuantizedRow(scale, values, sums, null, null);
        // int4: an int32 holds inputs 0..7 of one output; its low nibbles (bytes of v & 0x0F0F0F0F) are inputs 0,2,4,6
        // and its high nibbles inputs 1,3,5,7, so x is multiplied in those two orders.
        long packedRows = inFeatures / 8;
        var even = new long[packedRows];
        var odd = new long[packedRows];
        short* v = stackalloc short[8];
        for (long r = 0; r < packedRows; r++)
        {
            for (int k = 0; k < 4; k++) { v[k] = values[8 * r + 2 * k]; v[4 + k] = values[8 * r + 2 * k + 1]; }
            even[r] = ((long*)v)[0];
            odd[r] = ((long*)v)[1];
        }
        return new QuantizedRow(scale, values, sums, even, odd);
    }

    private void RunTile(int tile, int rows, QuantizedRow[] activations, nint weights, nint output, nint bias)
    {
        long fullTiles = outFeatures / Tile;
        long o0 = tile < fullTiles ? (long)tile * Tile : fullTiles * Tile + (tile - fullTiles) * NarrowTile;
        int width = tile < fullTiles ? Tile : NarrowTile;
        float* lanes = stackalloc float[2 * Tile];
        for (int row = 0; row < rows; row++)
        {
            var a = activations[row];
            var (f0, f1, f2, f3) = (Vector512<float>.Zero, Vector512<float>.Zero, Vector512<float>.Zero, Vector512<float>.Zero);
            fixed (short* xq = a.Values)
            fixed (float* ps = pairScales)
            {
                for (int g = 0; g < groups; g++)
                {
                    long first = (long)g * groupSize / pack, end = Math.Min(inFeatures, (long)(g + 1) * groupSize) / pack;
                    float* s = ps + (long)g * 2 * outFeatures + 2 * o0;
                    for (long start = first; start < end; start += chunkRows)
                    {
                        long stop = Math.Min(end, start + chunkRows);
                        if (width == NarrowTile)
                        {
                            var narrow = bits == 8
                                ? DotInt8Narrow((byte*)weights, xq, start, stop, o0)
                                : DotInt4Narrow((byte*)weights, a.EvenQuads!, a.OddQuads!, start, stop, o0);
                            f0 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(narrow), Avx512F.LoadVector512(s), f0);
                            continue;
                        }
                        var (a0, a1, a2, a3) = bits == 8
                            ? DotInt8((byte*)weights, xq, start, stop, o0)
                            : DotInt4((byte*)weights, a.EvenQuads!, a.OddQuads!, start, stop, o0);
                        f0 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(a0), Avx512F.LoadVector512(s), f0);
                        f1 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(a1), Avx512F.LoadVector512(s + 16), f1);
                        f2 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(a2), Avx512F.LoadVector512(s + 32), f2);
                        f3 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(a3), Avx512F.LoadVector512(s + 48), f3);
                    }
                }
            }
            Avx512F.Store(lanes, f0);
            Avx512F.Store(lanes + 16, f1);
            Avx512F.Store(lanes + 32, f2);
            Avx512F.Store(lanes + 48, f3);
            float* y = (float*)output + row * outFeatures + o0;
            for (int k = 0; k < width; k++)
            {
                double correction = 0;
                for (int g = 0; g < groups; g++) correction += scaledZeros[g * outFeatures + o0 + k] * (double)a.GroupSums[g];
                float value = a.Scale * (float)(lanes[2 * k] + lanes[2 * k + 1] - correction);
                y[k] = bias == 0 ? value : value + ((float*)bias)[o0 + k];
            }
        }
    }

    // Packed rows [start, stop) of outputs o0..o0+31: int32 (in/4, out), four bytes = four consecutive inputs.
    private (Vector512<int>, Vector512<int>, Vector512<int>, Vector512<int>) DotInt8(byte* w, short* xq, long start, long stop, long o0)
    {
        var (a0, a1, a2, a3) = (Vector512<int>.Zero, Vector512<int>.Zero, Vector512<int>.Zero, Vector512<int>.Zero);
        long stride = outFeatures * 4;
        byte* p = w + start * stride + o0 * 4;
        for (long r = start; r < stop; r++, p += stride)
        {
            var x = Vector512.Create(*(long*)(xq + 4 * r)).AsInt16();
            a0 = Avx512F.Add(a0, Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Avx.LoadVector256(p)), x));
            a1 = Avx512F.Add(a1, Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Avx.LoadVector256(p + 32)), x));
            a2 = Avx512F.Add(a2, Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Avx.LoadVector256(p + 64)), x));
            a3 = Avx512F.Add(a3, Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Avx.LoadVector256(p + 96)), x));
        }
        return (a0, a1, a2, a3);
    }

    // Packed rows [start, stop) of outputs o0..o0+31: int32 (in/8, out), eight nibbles = eight consecutive inputs.
    private (Vector512<int>, Vector512<int>, Vector512<int>, Vector512<int>) DotInt4(byte* w, long[] even, long[] odd, long start, long stop, long o0)
    {
        var (a0, a1, a2, a3) = (Vector512<int>.Zero, Vector512<int>.Zero, Vector512<int>.Zero, Vector512<int>.Zero);
        long stride = outFeatures * 4;
        byte* p = w + start * stride + o0 * 4;
        var mask = Vector256.Create(0x0F0F0F0Fu);
        for (long r = start; r < stop; r++, p += stride)
        {
            var xe = Vector512.Create(even[r]).AsInt16();
            var xo = Vector512.Create(odd[r]).AsInt16();
            a0 = Avx512F.Add(a0, Nibbles(Avx.LoadVector256((uint*)p), mask, xe, xo));
            a1 = Avx512F.Add(a1, Nibbles(Avx.LoadVector256((uint*)(p + 32)), mask, xe, xo));
            a2 = Avx512F.Add(a2, Nibbles(Avx.LoadVector256((uint*)(p + 64)), mask, xe, xo));
            a3 = Avx512F.Add(a3, Nibbles(Avx.LoadVector256((uint*)(p + 96)), mask, xe, xo));
        }
        return (a0, a1, a2, a3);
    }

    // As DotInt8 and DotInt4 for one 8-output load: the outputs left over after the 32-wide tiles.
    private Vector512<int> DotInt8Narrow(byte* w, short* xq, long start, long stop, long o0)
    {
        var acc = Vector512<int>.Zero;
        long stride = outFeatures * 4;
        byte* p = w + start * stride + o0 * 4;
        for (long r = start; r < stop; r++, p += stride)
            acc = Avx512F.Add(acc, Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Avx.LoadVector256(p)), Vector512.Create(*(long*)(xq + 4 * r)).AsInt16()));
        return acc;
    }

    private Vector512<int> DotInt4Narrow(byte* w, long[] even, long[] odd, long start, long stop, long o0)
    {
        var acc = Vector512<int>.Zero;
        long stride = outFeatures * 4;
        byte* p = w + start * stride + o0 * 4;
        var mask = Vector256.Create(0x0F0F0F0Fu);
        for (long r = start; r < stop; r++, p += stride)
            acc = Avx512F.Add(acc, Nibbles(Avx.LoadVector256((uint*)p), mask, Vector512.Create(even[r]).AsInt16(), Vector512.Create(odd[r]).AsInt16()));
        return acc;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Nibbles(Vector256<uint> v, Vector256<uint> mask, Vector512<short> xe, Vector512<short> xo)
    {
        var low = Avx512BW.ConvertToVector512Int16(Avx2.And(v, mask).AsByte());
        var high = Avx512BW.ConvertToVector512Int16(Avx2.And(Avx2.ShiftRightLogical(v, 4), mask).AsByte());
        return Avx512F.Add(Avx512BW.MultiplyAddAdjacent(low, xe), Avx512BW.MultiplyAddAdjacent(high, xo));
    }
}
