using System.Buffers;
using System.Runtime.CompilerServices;
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
    private const int NarrowTile = 8;     // outputs per 256-bit load of packed int32s: 16 int32 lanes, two per output
    private const int AccumulatorVectors = 128; // per thread, all rows of x: 8 KB of int32 sums, 1024 outputs of one row
    private const int PrefetchRows = 2;       // one row of x fetches the packed row this far ahead (best of 0, 2, 4, 8 measured)
    private const long ParallelWork = 1 << 18;  // weights × rows below which a second thread costs more than it saves
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
        var p = TensorMemory.DataPointer(w);
        var q = TensorMemory.DataPointer(qweight);
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
        // No dispose scope (about a microsecond a call): y lands in the caller's scope, the copies (rare) are disposed here.
        int dims = (int)x.dim();
        var shape = new long[dims];
        long rowCount = 1;
        for (int i = 0; i < dims - 1; i++) rowCount *= shape[i] = x.size(i);
        shape[^1] = outFeatures;
        int rows = (int)rowCount;
        using var inputCopy = x.is_contiguous() ? null : x.contiguous();
        using var biasCopy = bias is null || (bias.dtype == ScalarType.Float32 && bias.is_contiguous()) ? null : bias.to(ScalarType.Float32).contiguous();
        var input = inputCopy ?? x;
        var biasValues = biasCopy ?? bias;
        var y = empty(shape, ScalarType.Float32);
        var xs = (float*)TensorMemory.DataPointer(input);
        var ys = TensorMemory.DataPointer(y);
        var bs = biasValues is null ? 0 : TensorMemory.DataPointer(biasValues);
        var w = TensorMemory.DataPointer(qweight);
        // The rows of x as int16 pairs: per packed row one long (int8: its four inputs) or two (int4: even, odd inputs).
        long perRow = inFeatures / 4;
        long[] packs = ArrayPool<long>.Shared.Rent((int)(rows * perRow));
        long[] sums = ArrayPool<long>.Shared.Rent(rows * groups);
        float[] rowScales = ArrayPool<float>.Shared.Rent(rows);
        try
        {
            fixed (long* packed = packs)
            fixed (long* groupSums = sums)
            fixed (float* scaleOfRow = rowScales)
            {
                for (int r = 0; r < rows; r++)
                    scaleOfRow[r] = QuantizeRow(xs + r * inFeatures, packed + r * perRow, groupSums + r * groups);
                var a = new Activations(rows, packed, perRow, groupSums, scaleOfRow);
                long units = outFeatures / NarrowTile;
                // Each thread takes one contiguous range of outputs and streams the packed rows across it; small layers
                // are not worth a thread hand-off (a few microseconds each).
                int threads = outFeatures * inFeatures * rows < ParallelWork ? 1 : (int)Math.Clamp(get_num_threads(), 1, units);
                if (threads == 1) RunColumns(0, outFeatures, a, w, ys, bs);
                else
                    Models.Layers.DecodeThreads.Shared.Run(threads,
                        t => RunColumns(units * t / threads * NarrowTile, units * (t + 1) / threads * NarrowTile, a, w, ys, bs));
            }
        }
        finally
        {
            ArrayPool<long>.Shared.Return(packs);
            ArrayPool<long>.Shared.Return(sums);
            ArrayPool<float>.Shared.Return(rowScales);
        }
        GC.KeepAlive(input);
        GC.KeepAlive(biasValues);
        GC.KeepAlive(qweight);
        return y;
    }


    /// <summary>The quantized rows of x: per row <c>PerRow</c> int16 packs, <c>groups</c> group sums and a scale.</summary>
    private readonly struct Activations(int rows, long* packs, long perRow, long* groupSums, float* scales)
    {
        public readonly int Rows = rows;
        public readonly long* Packs = packs, GroupSums = groupSums;
        public readonly long PerRow = perRow;
        public readonly float* Scales = scales;
    }

    /// <summary>
    /// One row of x as int16 in ±8191 into <paramref name="packs"/> (int8: four consecutive inputs per long; int4: per
    /// eight inputs the even ones, then the odd ones), its per-group sums into <paramref name="sums"/>; returns the scale.
    /// </summary>
    private float QuantizeRow(float* x, long* packs, long* sums)
    {
        long whole = inFeatures / 16 * 16;
        // Max of |x| (any order gives the same max), then x / scale rounded half to even, as MathF.Round does: the
        // vector division is IEEE's, and VCVTPS2DQ rounds in the default mode, to nearest even.
        var top = Vector512<float>.Zero;
        for (long i = 0; i < whole; i += 16) top = Vector512.Max(top, Vector512.Abs(Avx512F.LoadVector512(x + i)));
        float max = 0;
        for (int j = 0; j < 16; j++) max = Math.Max(max, top[j]);
        for (long i = whole; i < inFeatures; i++) max = Math.Max(max, Math.Abs(x[i]));
        float scale = max == 0 ? 1 : max / ActivationMax;
        short* values = (short*)packs;
        var divisor = Vector512.Create(scale);
        for (long i = 0; i < whole; i += 16)
            Avx.Store(values + i, Avx512F.ConvertToVector256Int16(Avx512F.ConvertToVector512Int32(Avx512F.Divide(Avx512F.LoadVector512(x + i), divisor))));
        for (long i = whole; i < inFeatures; i++) values[i] = (short)MathF.Round(x[i] / scale);
        for (int g = 0; g < groups; g++)
        {
            long sum = 0;
            for (long i = (long)g * groupSize, end = Math.Min(inFeatures, (long)(g + 1) * groupSize); i < end; i++) sum += values[i];
            sums[g] = sum;
        }
        if (bits == 4)
        {
            // int4: an int32 holds inputs 0..7 of one output; its low nibbles (bytes of v & 0x0F0F0F0F) are inputs
            // 0,2,4,6 and its high nibbles inputs 1,3,5,7, so x is multiplied in those two orders.
            short* v = stackalloc short[8];
            for (long r = 0; r < inFeatures / 8; r++)
            {
                short* q = values + 8 * r;
                for (int k = 0; k < 4; k++) { v[k] = q[2 * k]; v[4 + k] = q[2 * k + 1]; }
                packs[2 * r] = ((long*)v)[0];
                packs[2 * r + 1] = ((long*)v)[1];
            }
        }
        return scale;
    }

    /// <summary>
    /// Outputs [o0, o1) for every row of x, in blocks of columns: per group (and per overflow chunk of a long group)
    /// int32 accumulators start at zero, take the group's packed rows one after another, each row one contiguous run of
    /// the block's columns (the order the prefetcher follows), and are flushed to fp32 with the group's scale in group
    /// order: the same integer sums and the same fp32 chain per output as a 32-output tile walking down the rows.
    /// </summary>
    private void RunColumns(long o0, long o1, Activations a, nint weights, nint output, nint bias)
    {
        int rows = a.Rows;
        int blockVectors = AccumulatorVectors / rows;
        var acc = stackalloc Vector512<int>[AccumulatorVectors];
        var f = stackalloc Vector512<float>[AccumulatorVectors];
        float* lanes = (float*)f;
        long stride = outFeatures * 4;
        fixed (float* ps = pairScales)
        {
            for (long b0 = o0; b0 < o1; b0 += blockVectors * NarrowTile)
            {
                int vectors = (int)Math.Min(blockVectors, (o1 - b0) / NarrowTile);
                new Span<Vector512<float>>(f, rows * vectors).Clear();
                for (int g = 0; g < groups; g++)
                {
                    long first = (long)g * groupSize / pack, end = Math.Min(inFeatures, (long)(g + 1) * groupSize) / pack;
                    float* s = ps + (long)g * 2 * outFeatures + 2 * b0;
                    for (long start = first; start < end; start += chunkRows)
                    {
                        long stop = Math.Min(end, start + chunkRows);
                        new Span<Vector512<int>>(acc, rows * vectors).Clear();
                        byte* p = (byte*)weights + start * stride + b0 * 4;
                        if (rows == 1)
                        {
                            if (bits == 8) RowsInt8(p, stride, a.Packs, start, stop, vectors, acc);
                            else RowsInt4(p, stride, a.Packs, start, stop, vectors, acc);
                        }
                        else if (bits == 8) RowsInt8Many(p, stride, a, start, stop, vectors, acc);
                        else RowsInt4Many(p, stride, a, start, stop, vectors, acc);
                        for (int m = 0; m < rows; m++)
                            for (int v = 0; v < vectors; v++)
                                f[m * vectors + v] = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(acc[m * vectors + v]), Avx512F.LoadVector512(s + 16 * v), f[m * vectors + v]);
                    }
                }
                for (int m = 0; m < rows; m++)
                {
                    float* y = (float*)output + m * outFeatures + b0;
                    float* l = lanes + m * vectors * 16;
                    long* groupSums = a.GroupSums + m * groups;
                    for (int k = 0; k < vectors * NarrowTile; k++)
                    {
                        double correction = 0;
                        for (int g = 0; g < groups; g++) correction += scaledZeros[g * outFeatures + b0 + k] * (double)groupSums[g];
                        float value = a.Scales[m] * (float)(l[2 * k] + l[2 * k + 1] - correction);
                        y[k] = bias == 0 ? value : value + ((float*)bias)[b0 + k];
                    }
                }
            }
        }
    }

    // Packed rows [start, stop) of one row of x over `vectors` 8-output loads from p: int32 (in/4, out), four bytes =
    // four consecutive inputs; each row's loads one contiguous run.
    private static void RowsInt8(byte* p, long stride, long* packs, long start, long stop, int vectors, Vector512<int>* acc)
    {
        long ahead = PrefetchRows * stride;
        for (long r = start; r < stop; r++, p += stride)
        {
            var x = Vector512.Create(packs[r]).AsInt16();
            for (int v = 0; v < vectors; v++)
            {
                if ((v & 1) == 0) Sse.Prefetch0(p + ahead + 32 * v);
                acc[v] = Avx512F.Add(acc[v], Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Avx.LoadVector256(p + 32 * v)), x));
            }
        }
    }

    // As RowsInt8 for int32 (in/8, out): eight nibbles = eight consecutive inputs, times the even and odd inputs.
    private static void RowsInt4(byte* p, long stride, long* packs, long start, long stop, int vectors, Vector512<int>* acc)
    {
        long ahead = PrefetchRows * stride;
        var mask = Vector256.Create(0x0F0F0F0Fu);
        for (long r = start; r < stop; r++, p += stride)
        {
            var xe = Vector512.Create(packs[2 * r]).AsInt16();
            var xo = Vector512.Create(packs[2 * r + 1]).AsInt16();
            for (int v = 0; v < vectors; v++)
            {
                if ((v & 1) == 0) Sse.Prefetch0(p + ahead + 32 * v);
                acc[v] = Avx512F.Add(acc[v], Nibbles(Avx.LoadVector256((uint*)(p + 32 * v)), mask, xe, xo));
            }
        }
    }

    // As RowsInt8 for several rows of x: each load of weights is widened once and multiplied with every row.
    private static void RowsInt8Many(byte* p, long stride, Activations a, long start, long stop, int vectors, Vector512<int>* acc)
    {
        for (long r = start; r < stop; r++, p += stride)
            for (int v = 0; v < vectors; v++)
            {
                var wv = Avx512BW.ConvertToVector512Int16(Avx.LoadVector256(p + 32 * v));
                for (int m = 0; m < a.Rows; m++)
                    acc[m * vectors + v] = Avx512F.Add(acc[m * vectors + v], Avx512BW.MultiplyAddAdjacent(wv, Vector512.Create(a.Packs[m * a.PerRow + r]).AsInt16()));
            }
    }

    private static void RowsInt4Many(byte* p, long stride, Activations a, long start, long stop, int vectors, Vector512<int>* acc)
    {
        var mask = Vector256.Create(0x0F0F0F0Fu);
        for (long r = start; r < stop; r++, p += stride)
            for (int v = 0; v < vectors; v++)
            {
                var raw = Avx.LoadVector256((uint*)(p + 32 * v));
                for (int m = 0; m < a.Rows; m++)
                {
                    long* x = a.Packs + m * a.PerRow + 2 * r;
                    acc[m * vectors + v] = Avx512F.Add(acc[m * vectors + v], Nibbles(raw, mask, Vector512.Create(x[0]).AsInt16(), Vector512.Create(x[1]).AsInt16()));
                }
            }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Nibbles(Vector256<uint> v, Vector256<uint> mask, Vector512<short> xe, Vector512<short> xo)
    {
        var low = Avx512BW.ConvertToVector512Int16(Avx2.And(v, mask).AsByte());
        var high = Avx512BW.ConvertToVector512Int16(Avx2.And(Avx2.ShiftRightLogical(v, 4), mask).AsByte());
        return Avx512F.Add(Avx512BW.MultiplyAddAdjacent(low, xe), Avx512BW.MultiplyAddAdjacent(high, xo));
    }
}
