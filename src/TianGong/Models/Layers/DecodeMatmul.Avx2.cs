using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace TianGong.Models.Layers;

/// <summary>
/// The kernel on CPUs with AVX2 and FMA but no AVX-512 (most laptops): the same loops, the same panels and the same
/// order of accumulation (so the same batch invariance), on 8-lane vectors. With 16 registers instead of 32 a packed
/// tile is 2 rows × 48 columns (12 accumulators) and a dot-product tile 2 rows of x × 4 rows of W (8 accumulators).
/// </summary>
public static unsafe partial class DecodeMatmul
{
    private const int Lanes256 = 8;
    private const int TileRows256 = 2;
    private const int DotRows256 = 2;
    private const int DirectRows256 = 16;     // unpacked (in, out) up to 8 tiles: beyond, packing won (docs/benchmarks.md)

    private static void RowBlock256(Product p, int k0, int k1, float* acc)
    {
        long width = p.Width, vectors = width / Lanes256;
        new Span<float>(acc, (int)width).Clear();
        float* row = p.W + k0 * width;
        for (int k = k0; k < k1; k++, row += width)
        {
            float xk = p.X[k];
            var b = Vector256.Create(xk);
            for (long v = 0; v < vectors; v++)
                Avx.Store(acc + v * Lanes256, Fma.MultiplyAdd(b, Avx.LoadVector256(row + v * Lanes256), Avx.LoadVector256(acc + v * Lanes256)));
            for (long j = vectors * Lanes256; j < width; j++) acc[j] = MathF.FusedMultiplyAdd(xk, row[j], acc[j]);
        }
    }

    /// <summary>As <see cref="Tile{R, V}"/> on 8-lane vectors: up to 2 rows × 48 columns.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile256<R>(TileArgs t) where R : struct, IRows
    {
        int n = R.Count;
        float* c = stackalloc float[TileRows256 * PanelWidth];
        bool direct = t.Columns == PanelWidth;
        float* y = direct ? t.Y : c;
        long ly = direct ? t.YStride : PanelWidth;
        if (!direct && !t.First) CopyNarrowIn(t, c, n);
        Vector256<float> a00 = default, a01 = default, a02 = default, a03 = default, a04 = default, a05 = default,
            a10 = default, a11 = default, a12 = default, a13 = default, a14 = default, a15 = default;
        byte* next = (byte*)t.Prefetch;
        float* w = t.Panel;
        float* x = t.X;
        long s = t.XStride, ws = t.PanelStride;
        for (int k = 0; k < t.Depth; k++, w += ws, x++)
        {
            if (next != null)
            {
                Sse.Prefetch1(next);
                Sse.Prefetch1(next + 64);
                Sse.Prefetch1(next + 128);
                next += t.PrefetchStride;
            }
            var b0 = Vector256.Create(x[0]);
            var b1 = n > 1 ? Vector256.Create(x[s]) : default;
            var v = Avx.LoadVector256(w);
            a00 = Fma.MultiplyAdd(b0, v, a00); if (n > 1) a10 = Fma.MultiplyAdd(b1, v, a10);
            v = Avx.LoadVector256(w + 8);
            a01 = Fma.MultiplyAdd(b0, v, a01); if (n > 1) a11 = Fma.MultiplyAdd(b1, v, a11);
            v = Avx.LoadVector256(w + 16);
            a02 = Fma.MultiplyAdd(b0, v, a02); if (n > 1) a12 = Fma.MultiplyAdd(b1, v, a12);
            v = Avx.LoadVector256(w + 24);
            a03 = Fma.MultiplyAdd(b0, v, a03); if (n > 1) a13 = Fma.MultiplyAdd(b1, v, a13);
            v = Avx.LoadVector256(w + 32);
            a04 = Fma.MultiplyAdd(b0, v, a04); if (n > 1) a14 = Fma.MultiplyAdd(b1, v, a14);
            v = Avx.LoadVector256(w + 40);
            a05 = Fma.MultiplyAdd(b0, v, a05); if (n > 1) a15 = Fma.MultiplyAdd(b1, v, a15);
        }
        bool add = !t.First;
        Finish256(y, add, a00, a01, a02, a03, a04, a05);
        if (n > 1) Finish256(y + ly, add, a10, a11, a12, a13, a14, a15);
        if (!direct) CopyNarrowOut(t, c, n);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Finish256(float* y, bool add, Vector256<float> a0, Vector256<float> a1, Vector256<float> a2,
        Vector256<float> a3, Vector256<float> a4, Vector256<float> a5)
    {
        if (add)
        {
            a0 = Avx.Add(Avx.LoadVector256(y), a0);
            a1 = Avx.Add(Avx.LoadVector256(y + 8), a1);
            a2 = Avx.Add(Avx.LoadVector256(y + 16), a2);
            a3 = Avx.Add(Avx.LoadVector256(y + 24), a3);
            a4 = Avx.Add(Avx.LoadVector256(y + 32), a4);
            a5 = Avx.Add(Avx.LoadVector256(y + 40), a5);
        }
        Avx.Store(y, a0);
        Avx.Store(y + 8, a1);
        Avx.Store(y + 16, a2);
        Avx.Store(y + 24, a3);
        Avx.Store(y + 32, a4);
        Avx.Store(y + 40, a5);
    }

    /// <summary>As <see cref="Dot{R}"/> on 8-lane vectors: up to 2 rows of x × 4 rows of W.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot256<R>(DotArgs t) where R : struct, IRows
    {
        int n = R.Count, depth = t.Depth, whole = depth / Lanes256 * Lanes256;
        float* w0 = t.W.W0, w1 = t.W.W1, w2 = t.W.W2, w3 = t.W.W3;
        float* x0 = t.X, x1 = t.X + depth;
        Vector256<float> c00 = default, c01 = default, c02 = default, c03 = default, c10 = default, c11 = default, c12 = default, c13 = default;
        float* ahead = t.Ahead;
        int aheadRows = t.AheadRows;
        for (int k = 0; k < whole; k += Lanes256)
        {
            if (aheadRows != 0 && (k & 15) == 0)
            {
                Sse.Prefetch1(ahead + k);
                if (aheadRows > 1) Sse.Prefetch1(ahead + depth + k);
                if (aheadRows > 2) Sse.Prefetch1(ahead + 2 * depth + k);
                if (aheadRows > 3) Sse.Prefetch1(ahead + 3 * depth + k);
            }
            var v0 = Avx.LoadVector256(w0 + k);
            var v1 = Avx.LoadVector256(w1 + k);
            var v2 = Avx.LoadVector256(w2 + k);
            var v3 = Avx.LoadVector256(w3 + k);
            var a = Avx.LoadVector256(x0 + k);
            c00 = Fma.MultiplyAdd(a, v0, c00); c01 = Fma.MultiplyAdd(a, v1, c01); c02 = Fma.MultiplyAdd(a, v2, c02); c03 = Fma.MultiplyAdd(a, v3, c03);
            if (n > 1) { a = Avx.LoadVector256(x1 + k); c10 = Fma.MultiplyAdd(a, v0, c10); c11 = Fma.MultiplyAdd(a, v1, c11); c12 = Fma.MultiplyAdd(a, v2, c12); c13 = Fma.MultiplyAdd(a, v3, c13); }
        }
        if (whole < depth)
        {
            // The last depth mod 8 elements, zero-padded to a vector: the same lanes continue their chains.
            int rest = depth - whole;
            float* tail = stackalloc float[6 * Lanes256];
            new Span<float>(tail, 6 * Lanes256).Clear();
            for (int j = 0; j < rest; j++)
            {
                tail[j] = w0[whole + j]; tail[Lanes256 + j] = w1[whole + j]; tail[2 * Lanes256 + j] = w2[whole + j]; tail[3 * Lanes256 + j] = w3[whole + j];
                tail[4 * Lanes256 + j] = x0[whole + j];
                if (n > 1) tail[5 * Lanes256 + j] = x1[whole + j];
            }
            var v0 = Avx.LoadVector256(tail);
            var v1 = Avx.LoadVector256(tail + Lanes256);
            var v2 = Avx.LoadVector256(tail + 2 * Lanes256);
            var v3 = Avx.LoadVector256(tail + 3 * Lanes256);
            var a = Avx.LoadVector256(tail + 4 * Lanes256);
            c00 = Fma.MultiplyAdd(a, v0, c00); c01 = Fma.MultiplyAdd(a, v1, c01); c02 = Fma.MultiplyAdd(a, v2, c02); c03 = Fma.MultiplyAdd(a, v3, c03);
            if (n > 1) { a = Avx.LoadVector256(tail + 5 * Lanes256); c10 = Fma.MultiplyAdd(a, v0, c10); c11 = Fma.MultiplyAdd(a, v1, c11); c12 = Fma.MultiplyAdd(a, v2, c12); c13 = Fma.MultiplyAdd(a, v3, c13); }
        }
        Sums256(t, 0, c00, c01, c02, c03);
        if (n > 1) Sums256(t, 1, c10, c11, c12, c13);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Sums256(DotArgs t, int row, Vector256<float> s0, Vector256<float> s1, Vector256<float> s2, Vector256<float> s3)
    {
        float* y = t.Y + row * t.YStride;
        float* b = t.Bias;
        y[0] = b == null ? Vector256.Sum(s0) : Vector256.Sum(s0) + b[0];
        if (t.Columns > 1) y[1] = b == null ? Vector256.Sum(s1) : Vector256.Sum(s1) + b[1];
        if (t.Columns > 2) y[2] = b == null ? Vector256.Sum(s2) : Vector256.Sum(s2) + b[2];
        if (t.Columns > 3) y[3] = b == null ? Vector256.Sum(s3) : Vector256.Sum(s3) + b[3];
    }
}
