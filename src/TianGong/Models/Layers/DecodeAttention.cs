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
/// Σ p_j v_j / Σ p_j, everything accumulated in fp32 in slot order (d: 16 or 8 lanes, a fixed horizontal sum). So a
/// row's output depends on nothing but its own query and cache: not the other rows, the thread that runs it, or the
/// batch size (batch-invariant, as <see cref="DecodeMatmul"/>). It matches libtorch's SDPA within 1e-5 (DecodeAttentionTests).
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
        int pairs = batch * heads;
        int threads = work < ParallelWork ? 1 : Math.Clamp(get_num_threads(), 1, pairs);
        float scale = 1f / MathF.Sqrt(dim);
        // Pointers cross into the worker lambda as addresses (a lambda cannot capture a pointer).
        nint qa = (nint)qp, ka = (nint)keys, va = (nint)values, ya = (nint)yp;
        void Share(int index, int count)
        {
            for (int pair = pairs * index / count; pair < pairs * (index + 1) / count; pair++)
            {
                int b = pair / heads, h = pair % heads, slot = slots[b];
                int first = window is { } w ? Math.Max(0, slot - w + 1) : 0;
                long head = (firstRow + b) * rowStride + h / groups * headStride;
                One((float*)qa + b * qb + h * qh, (float*)ka + head, (float*)va + head, dim, first, slot + 1, scale, (float*)ya + (long)pair * dim);
            }
        }
        if (threads == 1) Share(0, 1);
        else Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t => Share(t, threads));
        GC.KeepAlive(q);
        GC.KeepAlive(k);
        GC.KeepAlive(v);
        GC.KeepAlive(keyCache);
        GC.KeepAlive(valueCache);
        return y;
    }

    /// <summary>y = softmax(q·K[first..end)ᵀ · scale) · V[first..end) for one head; K, V rows of <paramref name="dim"/> floats.</summary>
    private static void One(float* q, float* keys, float* values, int dim, int first, int end, float scale, float* y)
    {
        int n = end - first;
        float[]? rented = n > StackScores ? ArrayPool<float>.Shared.Rent(n) : null;
        float* stack = stackalloc float[rented is null ? n : 0];
        fixed (float* heap = rented)
        {
            float* p = rented is null ? stack : heap;
            float max = float.NegativeInfinity;
            for (int j = 0; j < n; j++)
            {
                float s = Dot(q, keys + (long)(first + j) * dim, dim) * scale;
                p[j] = s;
                if (s > max) max = s;
            }
            float sum = Exponentials(p, n, max);
            new Span<float>(y, dim).Clear();
            for (int j = 0; j < n; j++) Accumulate(y, values + (long)(first + j) * dim, p[j], dim);
            float inverse = 1f / sum;
            for (int d = 0; d < dim; d++) y[d] *= inverse;
        }
        if (rented is not null) ArrayPool<float>.Shared.Return(rented);
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

    /// <summary>a·b over dim floats: one fused multiply-add chain per lane, then a fixed horizontal sum, then the tail.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Dot(float* a, float* b, int dim)
    {
        int d = 0;
        float sum;
        if (Avx512F.IsSupported)
        {
            var acc = Vector512<float>.Zero;
            for (; d + 16 <= dim; d += 16) acc = Avx512F.FusedMultiplyAdd(Avx512F.LoadVector512(a + d), Avx512F.LoadVector512(b + d), acc);
            sum = Vector512.Sum(acc);
        }
        else
        {
            var acc = Vector256<float>.Zero;
            for (; d + 8 <= dim; d += 8) acc = Fma.MultiplyAdd(Avx.LoadVector256(a + d), Avx.LoadVector256(b + d), acc);
            sum = Vector256.Sum(acc);
        }
        for (; d < dim; d++) sum = MathF.FusedMultiplyAdd(a[d], b[d], sum);
        return sum;
    }

    /// <summary>y += p·v over dim floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Accumulate(float* y, float* v, float p, int dim)
    {
        int d = 0;
        if (Avx512F.IsSupported)
        {
            var weight = Vector512.Create(p);
            for (; d + 16 <= dim; d += 16) Avx512F.Store(y + d, Avx512F.FusedMultiplyAdd(weight, Avx512F.LoadVector512(v + d), Avx512F.LoadVector512(y + d)));
        }
        else
        {
            var weight = Vector256.Create(p);
            for (; d + 8 <= dim; d += 8) Avx.Store(y + d, Fma.MultiplyAdd(weight, Avx.LoadVector256(v + d), Avx.LoadVector256(y + d)));
        }
        for (; d < dim; d++) y[d] = MathF.FusedMultiplyAdd(p, v[d], y[d]);
    }
}
