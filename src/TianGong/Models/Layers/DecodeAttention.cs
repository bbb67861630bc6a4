using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace TianGong.Models.Layers;

/// <summary>
/// Attention of one new token per row over a <see cref="KvCache"/>, in fp32 on the CPU with AVX-512 or AVX2 + FMA: the
/// decode step of <c>generate</c> and of the serving engine. libtorch's path for it is an append (a copy or, with per-row
/// lengths, a scatter), a repeat of the key/value heads for grouped-query attention, a (B, 1, 1, S) mask per row length
/// or window, and scaled_dot_product_attention: 125–190 µs per layer at batch 16 on poetry-small for some 16 × 8 × 100
/// × 64 multiply-adds (docs/benchmarks.md, "Decode step profile"). Here the new key and value go straight into the
/// cache's storage at each row's slot, and each (row, query head) reads its own key/value head (head / groups) over its
/// own length and window: no repeat, no mask tensor, one output tensor.
/// <para>
/// Per (row, head): scores s_j = q·k_j / √d over the visible slots, then softmax with the maximum subtracted, then
/// Σ p_j v_j / Σ p_j, in fp32. The scores are computed a block of 16 slots at a time (8 with AVX2): one fused
/// multiply-add chain per slot and lane over the head's vectors, the block's sums reduced together by one transposed
/// tree (the same tree for every slot, so a slot's score has the same bits wherever its block starts), the head's last
/// dim % 16 (% 8) products added one by one. Σ p_j v_j runs over the slots in order, even slots into one set of
/// accumulators and odd into another, added at the end. The query heads that share a key/value head (grouped-query
/// attention) are computed together, block by block of keys and chunk by chunk of values, which reorders the loops
/// but no head's sums. So a row's output depends on nothing but its own query, cache and length: not the other rows,
/// the thread that runs it, or the batch size (batch-invariant, as <see cref="DecodeMatmul"/>). It matches libtorch's
/// SDPA within 1e-5 (DecodeAttentionTests).
/// </para>
/// <para>
/// Speed: the work is two multiply-adds per 8 bytes of key and value read (per query head of a group), so past a few
/// hundred KB of cache per call (batch × key/value heads × slots × 512 B at head size 64) the time is the time to read
/// the cache from L2, L3 or memory; the blocked scores and the two chains of Σ p_j v_j keep the arithmetic under that,
/// and a group reads its keys and values once (docs/benchmarks.md, "Decode attention: blocked scores").
/// </para>
/// <para>
/// Inference only: the caller (<see cref="KvCache.TryAttendOne"/>) checks that no gradient is wanted and that the
/// call is one token per row; anything else takes libtorch's path.
/// </para>
/// </summary>
[SkipLocalsInit]
public static unsafe class DecodeAttention
{
    private const long ParallelWork = 1 << 18; // multiply-adds below which a second thread costs more than it saves (as DecodeMatmul)
    private const int StackScores = 2048;      // scores kept on the stack up to this many slots, rented beyond
    private const int StackTile = 4096;        // a short cache's keys copied to the stack up to this many floats (head size 256)
    private static int Block => Avx512F.IsSupported ? 16 : 8; // slots whose scores are reduced together: one vector of them
    private const int Chunk = 64;              // slots of values read once for a group of query heads (even: see Weighted)

    /// <summary>Whether this CPU runs the kernel: AVX-512, or AVX2 with FMA.</summary>
    public static bool Supported => Avx512F.IsSupported || (Avx2.IsSupported && Fma.IsSupported);

    /// <summary>
    /// Stores k, v (B, kvHeads, 1, D) at slot <paramref name="slots"/>[b] of cache rows firstRow + b, then returns the
    /// attention of q (B, heads, 1, D) over slots max(0, slot − window + 1)..slot of each row, (B, heads, 1, D).
    /// The caches are (rows, kvHeads, capacity, D), contiguous fp32; q, k, v fp32 with unit stride along D.
    /// </summary>
    internal static Tensor Attend(Tensor q, Tensor k, Tensor v, Tensor keyCache, Tensor valueCache, int firstRow, int[] slots, int groups, int? window)
    {
        int batch = (int)q.size(0), heads = (int)q.size(1), dim = (int)q.size(3);
        int kvHeads = (int)keyCache.size(1), capacity = (int)keyCache.size(2);
        float* keys = (float*)TensorMemory.DataPointer(keyCache), values = (float*)TensorMemory.DataPointer(valueCache);
        float* qp = (float*)TensorMemory.DataPointer(q), kp = (float*)TensorMemory.DataPointer(k), vp = (float*)TensorMemory.DataPointer(v);
        long qb = q.stride(0), qh = q.stride(1), kb = k.stride(0), kh = k.stride(1), vb = v.stride(0), vh = v.stride(1);
        long headStride = (long)capacity * dim, rowStride = kvHeads * headStride;
        for (int b = 0; b < batch; b++)
            for (int g = 0; g < kvHeads; g++)
            {
                long at = (firstRow + b) * rowStride + g * headStride + (long)slots[b] * dim;
                Buffer.MemoryCopy(kp + b * kb + g * kh, keys + at, dim * sizeof(float), dim * sizeof(float));
                Buffer.MemoryCopy(vp + b * vb + g * vh, values + at, dim * sizeof(float), dim * sizeof(float));
            }

        var y = empty([batch, heads, 1, dim], ScalarType.Float32);
        float* yp = (float*)TensorMemory.DataPointer(y);
        long work = 0;
        for (int b = 0; b < batch; b++) work += 2L * heads * dim * (slots[b] + 1);
        // The unit of work: one row's key/value head and the `groups` query heads that read it.
        int units = batch * kvHeads;
        int threads = work < ParallelWork ? 1 : Math.Clamp(get_num_threads(), 1, units);
        float scale = 1f / MathF.Sqrt(dim);
        // Pointers cross into the worker lambda as addresses (a lambda cannot capture a pointer).
        nint qa = (nint)qp, ka = (nint)keys, va = (nint)values, ya = (nint)yp;
        void Share(int index, int count)
        {
            for (int unit = units * index / count; unit < units * (index + 1) / count; unit++)
            {
                int b = unit / kvHeads, g = unit % kvHeads, h = g * groups, slot = slots[b];
                int first = window is { } w ? Math.Max(0, slot - w + 1) : 0;
                long head = (firstRow + b) * rowStride + g * headStride;
                Group((float*)qa + b * qb + h * qh, qh, groups, (float*)ka + head, (float*)va + head, dim, first, slot + 1, scale,
                    (float*)ya + ((long)b * heads + h) * dim);
            }
        }
        if (threads == 1) Share(0, 1);
        else DecodeThreads.Shared.Run(threads, t => Share(t, threads));
        GC.KeepAlive(q);
        GC.KeepAlive(k);
        GC.KeepAlive(v);
        GC.KeepAlive(keyCache);
        GC.KeepAlive(valueCache);
        return y;
    }

    /// <summary>
    /// y_i = softmax(q_i·K[first..end)ᵀ · scale) · V[first..end) for the <paramref name="heads"/> query heads q_i = q + i·qh
    /// that share one key/value head (K, V rows of <paramref name="dim"/> floats); y_i = y + i·dim. Each block of keys and
    /// each chunk of values is read from memory once for all of them, then from L1 for the rest of the group.
    /// </summary>
    private static void Group(float* q, long qh, int heads, float* keys, float* values, int dim, int first, int end, float scale, float* y)
    {
        int n = end - first;
        keys += (long)first * dim;
        values += (long)first * dim;
        // Head i's scores at p + i·room, room for a whole block of them even when fewer slots are visible.
        int room = Math.Max(n, Block), total = room * heads;
        float[]? rented = total > StackScores ? ArrayPool<float>.Shared.Rent(total) : null;
        float* stack = stackalloc float[rented is null ? total : 0];
        float* inverse = stackalloc float[heads];
        fixed (float* heap = rented)
        {
            float* p = rented is null ? stack : heap;
            if (n < Block) ShortScores(q, qh, heads, keys, dim, n, p, room);
            else
            {
                // Blocks from slot 0; the last one ends at the last slot, overlapping its predecessor (the overlapped
                // scores come out with the same bits, as every slot's score is reduced the same way).
                for (int j = 0; ; j += Block)
                {
                    int at = Math.Min(j, n - Block);
                    for (int i = 0; i < heads; i++) Scores(q + i * qh, keys + (long)at * dim, dim, p + (long)i * room + at);
                    if (at == n - Block) break;
                }
            }
            for (int i = 0; i < heads; i++)
            {
                float* scores = p + (long)i * room;
                float max = ScaleAndMax(scores, n, scale);
                inverse[i] = 1f / Exponentials(scores, n, max);
            }
            Weighted(p, room, heads, values, n, dim, inverse, y);
        }
        if (rented is not null) ArrayPool<float>.Shared.Return(rented);
    }

    /// <summary>
    /// The scores of fewer than <see cref="Block"/> slots: their keys copied into a tile whose other rows are zero, then
    /// reduced as a whole block, so each score has the bits it would have in a longer cache.
    /// </summary>
    private static void ShortScores(float* q, long qh, int heads, float* keys, int dim, int n, float* p, int room)
    {
        int size = Block * dim;
        float[]? rented = size > StackTile ? ArrayPool<float>.Shared.Rent(size) : null;
        float* stack = stackalloc float[rented is null ? size : 0];
        fixed (float* heap = rented)
        {
            float* tile = rented is null ? stack : heap;
            Buffer.MemoryCopy(keys, tile, (long)size * sizeof(float), (long)n * dim * sizeof(float));
            new Span<float>(tile + (long)n * dim, (Block - n) * dim).Clear();
            for (int i = 0; i < heads; i++) Scores(q + i * qh, tile, dim, p + (long)i * room);
        }
        if (rented is not null) ArrayPool<float>.Shared.Return(rented);
    }

    /// <summary>
    /// p[i] = q·k_i for the <see cref="Block"/> key rows from <paramref name="keys"/> (16 with AVX-512, 8 with AVX2): one
    /// fused multiply-add chain per row and lane over the head's whole vectors, the rows' lanes then summed all at once by
    /// one transposed tree (<see cref="Sums16"/>, <see cref="Sums8"/>) instead of a horizontal sum per row, then the
    /// head's last dim % 16 (or % 8) products one by one. Unscaled.
    /// </summary>
    private static void Scores(float* q, float* keys, int dim, float* p)
    {
        long s = dim, s2 = 2L * dim, s3 = 3L * dim;
        int d = 0;
        if (Avx512F.IsSupported)
        {
            Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default, c6 = default, c7 = default,
                c8 = default, c9 = default, c10 = default, c11 = default, c12 = default, c13 = default, c14 = default, c15 = default;
            for (; d + 16 <= dim; d += 16)
            {
                var x = Avx512F.LoadVector512(q + d);
                float* r0 = keys + d, r4 = r0 + 4 * s, r8 = r0 + 8 * s, r12 = r0 + 12 * s;
                c0 = Avx512F.FusedMultiplyAdd(x, Avx512F.LoadVector512(r0), c0);
                c1 = Avx512F.FusedMultiplyAdd(x, Avx512F.LoadVector512(r0 + s), c1);
                c2 = Avx512F.FusedMultiplyAdd(x, Avx512F.LoadVector512(r0 + s2), c2);
                c3 = Avx512F.FusedMultiplyAdd(x, Avx512F.LoadVector512(r0 + s3), c3);
                c4 = Avx512F.FusedMultiplyAdd(x, Avx512F.LoadVector512(r4), c4);
                c5 = Avx512F.FusedMultiplyAdd(x, Avx512F.LoadVector512(r4 + s), c5);
                c6 = Avx512F.FusedMultiplyAdd(x, Avx512F.LoadVector512(r4 + s2), c6);
                c7 = Avx512F.FusedMultiplyAdd(x, Avx512F.LoadVector512(r4 + s3), c7);
                c8 = Avx512F.FusedMultiplyAdd(x, Avx512F.LoadVector512(r8), c8);
                c9 = Avx512F.FusedMultiplyAdd(x, Avx512F.LoadVector512(r8 + s), c9);
                c10 = Avx512F.FusedMultiplyAdd(x, Avx512F.LoadVector512(r8 + s2), c10);
                c11 = Avx512F.FusedMultiplyAdd(x, Avx512F.LoadVector512(r8 + s3), c11);
                c12 = Avx512F.FusedMultiplyAdd(x, Avx512F.LoadVector512(r12), c12);
                c13 = Avx512F.FusedMultiplyAdd(x, Avx512F.LoadVector512(r12 + s), c13);
                c14 = Avx512F.FusedMultiplyAdd(x, Avx512F.LoadVector512(r12 + s2), c14);
                c15 = Avx512F.FusedMultiplyAdd(x, Avx512F.LoadVector512(r12 + s3), c15);
            }
            Avx512F.Store(p, Sums16(c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15));
        }
        else
        {
            Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default, c6 = default, c7 = default;
            for (; d + 8 <= dim; d += 8)
            {
                var x = Avx.LoadVector256(q + d);
                float* r0 = keys + d, r4 = r0 + 4 * s;
                c0 = Fma.MultiplyAdd(x, Avx.LoadVector256(r0), c0);
                c1 = Fma.MultiplyAdd(x, Avx.LoadVector256(r0 + s), c1);
                c2 = Fma.MultiplyAdd(x, Avx.LoadVector256(r0 + s2), c2);
                c3 = Fma.MultiplyAdd(x, Avx.LoadVector256(r0 + s3), c3);
                c4 = Fma.MultiplyAdd(x, Avx.LoadVector256(r4), c4);
                c5 = Fma.MultiplyAdd(x, Avx.LoadVector256(r4 + s), c5);
                c6 = Fma.MultiplyAdd(x, Avx.LoadVector256(r4 + s2), c6);
                c7 = Fma.MultiplyAdd(x, Avx.LoadVector256(r4 + s3), c7);
            }
            Avx.Store(p, Sums8(c0, c1, c2, c3, c4, c5, c6, c7));
        }
        if (d == dim) return;
        for (int i = 0; i < Block; i++)
        {
            float* k = keys + i * s;
            float sum = p[i];
            for (int e = d; e < dim; e++) sum = MathF.FusedMultiplyAdd(q[e], k[e], sum);
            p[i] = sum;
        }
    }

    /// <summary>
    /// Lane i of the result is the sum of c_i's 16 lanes, the same tree for every i: adjacent lanes in pairs, the pairs in
    /// pairs (each 128-bit quarter's sum), then the quarters (0 + 1) + (2 + 3). 15 additions and 30 shuffles for 16 sums.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Sums16(Vector512<float> c0, Vector512<float> c1, Vector512<float> c2, Vector512<float> c3,
        Vector512<float> c4, Vector512<float> c5, Vector512<float> c6, Vector512<float> c7, Vector512<float> c8, Vector512<float> c9,
        Vector512<float> c10, Vector512<float> c11, Vector512<float> c12, Vector512<float> c13, Vector512<float> c14, Vector512<float> c15)
    {
        // Per 128-bit quarter of r_k: the quarter sums of c_4k .. c_4k+3 (DecodeMatmul's shuffle steps, the same tree).
        var r0 = DecodeMatmul.Quads(DecodeMatmul.Pairs(c0, c1), DecodeMatmul.Pairs(c2, c3));
        var r1 = DecodeMatmul.Quads(DecodeMatmul.Pairs(c4, c5), DecodeMatmul.Pairs(c6, c7));
        var r2 = DecodeMatmul.Quads(DecodeMatmul.Pairs(c8, c9), DecodeMatmul.Pairs(c10, c11));
        var r3 = DecodeMatmul.Quads(DecodeMatmul.Pairs(c12, c13), DecodeMatmul.Pairs(c14, c15));
        var h01 = Avx512F.Add(Avx512F.Shuffle4x128(r0, r1, 0x88), Avx512F.Shuffle4x128(r0, r1, 0xDD));
        var h23 = Avx512F.Add(Avx512F.Shuffle4x128(r2, r3, 0x88), Avx512F.Shuffle4x128(r2, r3, 0xDD));
        return Avx512F.Add(Avx512F.Shuffle4x128(h01, h23, 0x88), Avx512F.Shuffle4x128(h01, h23, 0xDD));
    }

    /// <summary>
    /// Lane i of the result is the sum of c_i's 8 lanes, the same tree for every i: adjacent lanes in pairs, the pairs in
    /// pairs (each 128-bit half's sum), then the two halves.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Sums8(Vector256<float> c0, Vector256<float> c1, Vector256<float> c2, Vector256<float> c3,
        Vector256<float> c4, Vector256<float> c5, Vector256<float> c6, Vector256<float> c7)
    {
        var low = Avx.HorizontalAdd(Avx.HorizontalAdd(c0, c1), Avx.HorizontalAdd(c2, c3));
        var high = Avx.HorizontalAdd(Avx.HorizontalAdd(c4, c5), Avx.HorizontalAdd(c6, c7));
        return Avx.Add(Avx.Permute2x128(low, high, 0x20), Avx.Permute2x128(low, high, 0x31));
    }

    /// <summary>
    /// y_i = inverse_i · Σ_j p_ij v_j over n rows of <paramref name="dim"/> floats for each of the group's heads (head i's
    /// weights at p + i·room, its output at y + i·dim). Per stretch of four vectors of the head (then single vectors):
    /// two sets of accumulators per head, the even slots into one and the odd into the other (two independent chains per
    /// vector), added at the end; then the last dim % 16 (% 8) one by one in slot order. With several heads the slots go
    /// in chunks of <see cref="Chunk"/>, each chunk's values read once for all of them and a head's accumulators kept in
    /// between, which changes nothing in the order of its sums.
    /// </summary>
    private static void Weighted(float* p, int room, int heads, float* values, int n, int dim, float* inverse, float* y)
    {
        long s = dim;
        int chunk = heads == 1 ? n : Chunk;
        // Per head, the two sets of four accumulators: 8 vectors of 16 (AVX-512) or of 8 (AVX2).
        float* acc = stackalloc float[heads * 128];
        int d = 0;
        if (Avx512F.IsSupported)
        {
            for (; d + 64 <= dim; d += 64)
            {
                new Span<float>(acc, heads * 128).Clear();
                for (int c = 0; c < n; c += chunk)
                    for (int i = 0; i < heads; i++)
                        Stretch512(p + (long)i * room + c, values + c * s + d, s, Math.Min(chunk, n - c), acc + i * 128);
                for (int i = 0; i < heads; i++)
                {
                    var factor = Vector512.Create(inverse[i]);
                    float* a = acc + i * 128, out_ = y + (long)i * dim + d;
                    for (int k = 0; k < 64; k += 16)
                        Avx512F.Store(out_ + k, Avx512F.Multiply(Avx512F.Add(Avx512F.LoadVector512(a + k), Avx512F.LoadVector512(a + 64 + k)), factor));
                }
            }
            for (; d + 16 <= dim; d += 16)
            {
                new Span<float>(acc, heads * 32).Clear();
                for (int c = 0; c < n; c += chunk)
                    for (int i = 0; i < heads; i++)
                        Single512(p + (long)i * room + c, values + c * s + d, s, Math.Min(chunk, n - c), acc + i * 32);
                for (int i = 0; i < heads; i++)
                    Avx512F.Store(y + (long)i * dim + d, Avx512F.Multiply(Avx512F.Add(Avx512F.LoadVector512(acc + i * 32),
                        Avx512F.LoadVector512(acc + i * 32 + 16)), Vector512.Create(inverse[i])));
            }
        }
        else
        {
            for (; d + 32 <= dim; d += 32)
            {
                new Span<float>(acc, heads * 64).Clear();
                for (int c = 0; c < n; c += chunk)
                    for (int i = 0; i < heads; i++)
                        Stretch256(p + (long)i * room + c, values + c * s + d, s, Math.Min(chunk, n - c), acc + i * 64);
                for (int i = 0; i < heads; i++)
                {
                    var factor = Vector256.Create(inverse[i]);
                    float* a = acc + i * 64, out_ = y + (long)i * dim + d;
                    for (int k = 0; k < 32; k += 8)
                        Avx.Store(out_ + k, Avx.Multiply(Avx.Add(Avx.LoadVector256(a + k), Avx.LoadVector256(a + 32 + k)), factor));
                }
            }
            for (; d + 8 <= dim; d += 8)
            {
                new Span<float>(acc, heads * 16).Clear();
                for (int c = 0; c < n; c += chunk)
                    for (int i = 0; i < heads; i++)
                        Single256(p + (long)i * room + c, values + c * s + d, s, Math.Min(chunk, n - c), acc + i * 16);
                for (int i = 0; i < heads; i++)
                    Avx.Store(y + (long)i * dim + d, Avx.Multiply(Avx.Add(Avx.LoadVector256(acc + i * 16),
                        Avx.LoadVector256(acc + i * 16 + 8)), Vector256.Create(inverse[i])));
            }
        }
        for (; d < dim; d++)
            for (int i = 0; i < heads; i++)
            {
                float* weights = p + (long)i * room;
                float sum = 0;
                for (int j = 0; j < n; j++) sum = MathF.FusedMultiplyAdd(weights[j], values[j * s + d], sum);
                y[(long)i * dim + d] = sum * inverse[i];
            }
    }

    /// <summary>
    /// acc += Σ_j p_j v_j over m rows (m odd only for the last chunk) for four vectors from v: the even rows into
    /// acc[0..64), the odd into acc[64..128).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Stretch512(float* p, float* v, long s, int m, float* acc)
    {
        Vector512<float> a0 = Avx512F.LoadVector512(acc), a1 = Avx512F.LoadVector512(acc + 16), a2 = Avx512F.LoadVector512(acc + 32),
            a3 = Avx512F.LoadVector512(acc + 48), b0 = Avx512F.LoadVector512(acc + 64), b1 = Avx512F.LoadVector512(acc + 80),
            b2 = Avx512F.LoadVector512(acc + 96), b3 = Avx512F.LoadVector512(acc + 112);
        int j = 0;
        for (; j + 2 <= m; j += 2, v += 2 * s)
        {
            var even = Vector512.Create(p[j]);
            var odd = Vector512.Create(p[j + 1]);
            a0 = Avx512F.FusedMultiplyAdd(even, Avx512F.LoadVector512(v), a0);
            a1 = Avx512F.FusedMultiplyAdd(even, Avx512F.LoadVector512(v + 16), a1);
            a2 = Avx512F.FusedMultiplyAdd(even, Avx512F.LoadVector512(v + 32), a2);
            a3 = Avx512F.FusedMultiplyAdd(even, Avx512F.LoadVector512(v + 48), a3);
            b0 = Avx512F.FusedMultiplyAdd(odd, Avx512F.LoadVector512(v + s), b0);
            b1 = Avx512F.FusedMultiplyAdd(odd, Avx512F.LoadVector512(v + s + 16), b1);
            b2 = Avx512F.FusedMultiplyAdd(odd, Avx512F.LoadVector512(v + s + 32), b2);
            b3 = Avx512F.FusedMultiplyAdd(odd, Avx512F.LoadVector512(v + s + 48), b3);
        }
        if (j < m)
        {
            var last = Vector512.Create(p[j]);
            a0 = Avx512F.FusedMultiplyAdd(last, Avx512F.LoadVector512(v), a0);
            a1 = Avx512F.FusedMultiplyAdd(last, Avx512F.LoadVector512(v + 16), a1);
            a2 = Avx512F.FusedMultiplyAdd(last, Avx512F.LoadVector512(v + 32), a2);
            a3 = Avx512F.FusedMultiplyAdd(last, Avx512F.LoadVector512(v + 48), a3);
        }
        Avx512F.Store(acc, a0);
        Avx512F.Store(acc + 16, a1);
        Avx512F.Store(acc + 32, a2);
        Avx512F.Store(acc + 48, a3);
        Avx512F.Store(acc + 64, b0);
        Avx512F.Store(acc + 80, b1);
        Avx512F.Store(acc + 96, b2);
        Avx512F.Store(acc + 112, b3);
    }

    /// <summary>As <see cref="Stretch512"/> for one vector: even rows into acc[0..16), odd into acc[16..32).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Single512(float* p, float* v, long s, int m, float* acc)
    {
        Vector512<float> a = Avx512F.LoadVector512(acc), b = Avx512F.LoadVector512(acc + 16);
        int j = 0;
        for (; j + 2 <= m; j += 2, v += 2 * s)
        {
            a = Avx512F.FusedMultiplyAdd(Vector512.Create(p[j]), Avx512F.LoadVector512(v), a);
            b = Avx512F.FusedMultiplyAdd(Vector512.Create(p[j + 1]), Avx512F.LoadVector512(v + s), b);
        }
        if (j < m) a = Avx512F.FusedMultiplyAdd(Vector512.Create(p[j]), Avx512F.LoadVector512(v), a);
        Avx512F.Store(acc, a);
        Avx512F.Store(acc + 16, b);
    }

    /// <summary>As <see cref="Stretch512"/> with AVX2: four vectors of 8, even rows into acc[0..32), odd into acc[32..64).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Stretch256(float* p, float* v, long s, int m, float* acc)
    {
        Vector256<float> a0 = Avx.LoadVector256(acc), a1 = Avx.LoadVector256(acc + 8), a2 = Avx.LoadVector256(acc + 16),
            a3 = Avx.LoadVector256(acc + 24), b0 = Avx.LoadVector256(acc + 32), b1 = Avx.LoadVector256(acc + 40),
            b2 = Avx.LoadVector256(acc + 48), b3 = Avx.LoadVector256(acc + 56);
        int j = 0;
        for (; j + 2 <= m; j += 2, v += 2 * s)
        {
            var even = Vector256.Create(p[j]);
            var odd = Vector256.Create(p[j + 1]);
            a0 = Fma.MultiplyAdd(even, Avx.LoadVector256(v), a0);
            a1 = Fma.MultiplyAdd(even, Avx.LoadVector256(v + 8), a1);
            a2 = Fma.MultiplyAdd(even, Avx.LoadVector256(v + 16), a2);
            a3 = Fma.MultiplyAdd(even, Avx.LoadVector256(v + 24), a3);
            b0 = Fma.MultiplyAdd(odd, Avx.LoadVector256(v + s), b0);
            b1 = Fma.MultiplyAdd(odd, Avx.LoadVector256(v + s + 8), b1);
            b2 = Fma.MultiplyAdd(odd, Avx.LoadVector256(v + s + 16), b2);
            b3 = Fma.MultiplyAdd(odd, Avx.LoadVector256(v + s + 24), b3);
        }
        if (j < m)
        {
            var last = Vector256.Create(p[j]);
            a0 = Fma.MultiplyAdd(last, Avx.LoadVector256(v), a0);
            a1 = Fma.MultiplyAdd(last, Avx.LoadVector256(v + 8), a1);
            a2 = Fma.MultiplyAdd(last, Avx.LoadVector256(v + 16), a2);
            a3 = Fma.MultiplyAdd(last, Avx.LoadVector256(v + 24), a3);
        }
        Avx.Store(acc, a0);
        Avx.Store(acc + 8, a1);
        Avx.Store(acc + 16, a2);
        Avx.Store(acc + 24, a3);
        Avx.Store(acc + 32, b0);
        Avx.Store(acc + 40, b1);
        Avx.Store(acc + 48, b2);
        Avx.Store(acc + 56, b3);
    }

    /// <summary>As <see cref="Single512"/> with AVX2: even rows into acc[0..8), odd into acc[8..16).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Single256(float* p, float* v, long s, int m, float* acc)
    {
        Vector256<float> a = Avx.LoadVector256(acc), b = Avx.LoadVector256(acc + 8);
        int j = 0;
        for (; j + 2 <= m; j += 2, v += 2 * s)
        {
            a = Fma.MultiplyAdd(Vector256.Create(p[j]), Avx.LoadVector256(v), a);
            b = Fma.MultiplyAdd(Vector256.Create(p[j + 1]), Avx.LoadVector256(v + s), b);
        }
        if (j < m) a = Fma.MultiplyAdd(Vector256.Create(p[j]), Avx.LoadVector256(v), a);
        Avx.Store(acc, a);
        Avx.Store(acc + 8, b);
    }

    /// <summary>p[j] *= scale for j &lt; n, and the largest of them (exact, so in any order).</summary>
    private static float ScaleAndMax(float* p, int n, float scale)
    {
        int j = 0;
        float max;
        if (Avx512F.IsSupported)
        {
            var factor = Vector512.Create(scale);
            var most = Vector512.Create(float.NegativeInfinity);
            for (; j + 16 <= n; j += 16)
            {
                var x = Avx512F.Multiply(Avx512F.LoadVector512(p + j), factor);
                Avx512F.Store(p + j, x);
                most = Avx512F.Max(most, x);
            }
            max = HorizontalMax(Vector256.Max(most.GetLower(), most.GetUpper()));
        }
        else
        {
            var factor = Vector256.Create(scale);
            var most = Vector256.Create(float.NegativeInfinity);
            for (; j + 8 <= n; j += 8)
            {
                var x = Avx.Multiply(Avx.LoadVector256(p + j), factor);
                Avx.Store(p + j, x);
                most = Avx.Max(most, x);
            }
            max = HorizontalMax(most);
        }
        for (; j < n; j++)
        {
            p[j] *= scale;
            if (p[j] > max) max = p[j];
        }
        return max;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float HorizontalMax(Vector256<float> x)
    {
        var m = Sse.Max(x.GetLower(), x.GetUpper());
        m = Sse.Max(m, Sse.MoveHighToLow(m, m));
        return MathF.Max(m.ToScalar(), m.GetElement(1));
    }

    /// <summary>
    /// p[j] = exp(p[j] − max) for j &lt; n, and their sum: vectors of 16 or 8 (<see cref="VectorExp"/>, about an ulp),
    /// the lanes' sums added once at the end, then the tail one by one, a fixed order.
    /// </summary>
    private static float Exponentials(float* p, int n, float max)
    {
        int j = 0;
        float sum;
        if (Avx512F.IsSupported)
        {
            var m = Vector512.Create(max);
            var acc = Vector512<float>.Zero;
            for (; j + 16 <= n; j += 16)
            {
                var e = VectorExp.Exp(Avx512F.LoadVector512(p + j) - m);
                Avx512F.Store(p + j, e);
                acc += e;
            }
            sum = Vector512.Sum(acc);
        }
        else
        {
            var m = Vector256.Create(max);
            var acc = Vector256<float>.Zero;
            for (; j + 8 <= n; j += 8)
            {
                var e = VectorExp.Exp(Avx.LoadVector256(p + j) - m);
                Avx.Store(p + j, e);
                acc += e;
            }
            sum = Vector256.Sum(acc);
        }
        for (; j < n; j++) sum += p[j] = MathF.Exp(p[j] - max);
        return sum;
    }
}
