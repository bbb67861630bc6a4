using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Models.Layers;

/// <summary>
/// The MLP activations of a decode step on the CPU in fp32 for 1 to <see cref="DecodeNorms.MaxRows"/> rows: GPT-2's
/// tanh GELU and Llama's SiLU(gate)·up, element by element on the calling thread. libtorch's gelu on a 16×2048 decode
/// step wakes its second OpenMP thread (82 µs measured under load) and SiLU·up is two ops; outside those sizes, in
/// training, or where a gradient is wanted, libtorch computes them as before.
/// <para>
/// Every element goes through the same vector formula (the last partial vector is padded, not computed by a scalar
/// path), so a row's bits do not depend on the batch it is in, nor on where it starts.
/// </para>
/// </summary>
[SkipLocalsInit]
public static unsafe class DecodeActivations
{
    // √(2/π), GELU's tanh approximation: gelu(x) = ½x(1 + tanh(u)), u = √(2/π)(x + 0.044715x³), and ½(1 + tanh(u)) = σ(2u).
    private const float TwoSqrtTwoOverPi = 1.5957691216057308f;
    private const float Cubic = 0.044715f;

    /// <summary>GELU with the tanh approximation (HF's gelu_new / gelu_pytorch_tanh): the kernel outside training, else libtorch.</summary>
    public static Tensor GeluTanh(Tensor x, bool training) =>
        (training ? null : TryGeluTanh(x)) ?? F.gelu(x, TorchSharp.Modules.GELU.Approximate.tanh);

    /// <summary>SiLU(gate) · up (Llama's SwiGLU): the kernel outside training, else libtorch.</summary>
    public static Tensor SiluTimes(Tensor gate, Tensor up, bool training)
    {
        if (!training && TrySiluTimes(gate, up) is { } y) return y;
        using var silu = F.silu(gate);
        return silu * up;
    }

    /// <summary>½x(1 + tanh(√(2/π)(x + 0.044715x³))), computed as x·σ(2u); null when the kernel does not apply.</summary>
    public static Tensor? TryGeluTanh(Tensor x)
    {
        if (x.dim() == 0 || !DecodeNorms.Applies(x, x.size(-1))) return null;
        using var copy = x.is_contiguous() ? null : x.contiguous();
        var input = copy ?? x;
        var y = empty_like(input);
        Elementwise((float*)TensorMemory.DataPointer(input), null, (float*)TensorMemory.DataPointer(y), input.numel());
        GC.KeepAlive(input);
        return y;
    }

    /// <summary>gate·σ(gate)·up for two tensors of one shape; null when the kernel does not apply.</summary>
    public static Tensor? TrySiluTimes(Tensor gate, Tensor up)
    {
        if (gate.dim() == 0 || !DecodeNorms.Applies(gate, gate.size(-1)) || !DecodeNorms.Applies(up, gate.size(-1))) return null;
        long dims = gate.dim();
        if (up.dim() != dims) return null;
        for (int i = 0; i < dims - 1; i++)
            if (up.size(i) != gate.size(i)) return null;
        using var gateCopy = gate.is_contiguous() ? null : gate.contiguous();
        using var upCopy = up.is_contiguous() ? null : up.contiguous();
        var (g, u) = (gateCopy ?? gate, upCopy ?? up);
        var y = empty_like(g);
        Elementwise((float*)TensorMemory.DataPointer(g), (float*)TensorMemory.DataPointer(u), (float*)TensorMemory.DataPointer(y), g.numel());
        GC.KeepAlive(g);
        GC.KeepAlive(u);
        return y;
    }

    /// <summary>y = gelu_tanh(x) when <paramref name="up"/> is null, else silu(x)·up; whole vectors, then the rest through a padded one.</summary>
    // Optimised from the first call: a decode step calls it a few times, and tier-0 code of vector loops is many times slower.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Elementwise(float* x, float* up, float* y, long n)
    {
        if (Vector512.IsHardwareAccelerated)
        {
            const int lanes = 16;
            long whole = n / lanes * lanes;
            for (long k = 0; k < whole; k += lanes)
                Vector512.Store(up == null ? Gelu(Vector512.Load(x + k)) : Silu(Vector512.Load(x + k)) * Vector512.Load(up + k), y + k);
            if (whole == n) return;
            float* pad = stackalloc float[2 * lanes];
            Pad(x + whole, up == null ? null : up + whole, (int)(n - whole), pad, lanes);
            var v = Vector512.Load(pad);
            Vector512.Store(up == null ? Gelu(v) : Silu(v) * Vector512.Load(pad + lanes), pad);
            new ReadOnlySpan<float>(pad, (int)(n - whole)).CopyTo(new Span<float>(y + whole, (int)(n - whole)));
        }
        else
        {
            const int lanes = 8;
            long whole = n / lanes * lanes;
            for (long k = 0; k < whole; k += lanes)
                Vector256.Store(up == null ? Gelu(Vector256.Load(x + k)) : Silu(Vector256.Load(x + k)) * Vector256.Load(up + k), y + k);
            if (whole == n) return;
            float* pad = stackalloc float[2 * lanes];
            Pad(x + whole, up == null ? null : up + whole, (int)(n - whole), pad, lanes);
            var v = Vector256.Load(pad);
            Vector256.Store(up == null ? Gelu(v) : Silu(v) * Vector256.Load(pad + lanes), pad);
            new ReadOnlySpan<float>(pad, (int)(n - whole)).CopyTo(new Span<float>(y + whole, (int)(n - whole)));
        }
    }

    /// <summary>The last <paramref name="count"/> elements of x (and up) into a zeroed vector each.</summary>
    private static void Pad(float* x, float* up, int count, float* pad, int lanes)
    {
        new Span<float>(pad, 2 * lanes).Clear();
        new ReadOnlySpan<float>(x, count).CopyTo(new Span<float>(pad, count));
        if (up != null) new ReadOnlySpan<float>(up, count).CopyTo(new Span<float>(pad + lanes, count));
    }

    // x·σ(2u) = x / (1 + e^(−2u)): for x → −∞ the exponential saturates at e^88 and the quotient is ~1e-37, gelu's limit 0.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Gelu(Vector512<float> x)
    {
        var u = x * Vector512.Create(TwoSqrtTwoOverPi) * Vector512.FusedMultiplyAdd(x * x, Vector512.Create(Cubic), Vector512<float>.One);
        return x / (Vector512<float>.One + VectorExp.Exp(-u));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Gelu(Vector256<float> x)
    {
        var u = x * Vector256.Create(TwoSqrtTwoOverPi) * Vector256.FusedMultiplyAdd(x * x, Vector256.Create(Cubic), Vector256<float>.One);
        return x / (Vector256<float>.One + VectorExp.Exp(-u));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Silu(Vector512<float> x) => x / (Vector512<float>.One + VectorExp.Exp(-x));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Silu(Vector256<float> x) => x / (Vector256<float>.One + VectorExp.Exp(-x));
}
