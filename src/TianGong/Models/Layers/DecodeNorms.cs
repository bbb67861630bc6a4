using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace TianGong.Models.Layers;

/// <summary>
/// LayerNorm and RMSNorm over the last dimension for a few rows (decode steps of 1 to <see cref="MaxRows"/> sequences)
/// in fp32 on the CPU, next to <see cref="DecodeMatmul"/>. Each libtorch op opens an OpenMP parallel region whose second
/// thread must be woken (OMP_WAIT_POLICY=PASSIVE, TorchRuntime.cs): a 16×512 layer_norm measured 54 µs under load
/// where its arithmetic is about a microsecond, and Llama's RMSNorm is five such ops (docs/benchmarks.md, "Decode
/// small ops"). Here a row is normalised on the calling thread in a few hundred nanoseconds.
/// <para>
/// Deterministic and batch-invariant: each row is reduced on its own, in one fixed order (8-lane partial sums along the
/// row, a fixed horizontal sum, then the tail), so a sequence's bits do not depend on which others share its step.
/// Layers call it outside training only (as DecodeMatmul: a recomputed training block must give the same bits as its
/// first forward, so training always runs libtorch).
/// </para>
/// </summary>
[SkipLocalsInit]
public static unsafe class DecodeNorms
{
    /// <summary>Inputs of up to this many rows take the kernels; more (a prompt's prefill) go to libtorch.</summary>
    public const int MaxRows = DecodeMatmul.MaxRows;

    private const int Lanes = 8; // floats per 256-bit vector: a row of 512 is 64 of them, too few for 512-bit vectors to matter

    /// <summary>
    /// (x − mean) / √(var + eps) · weight + bias over the last dimension (nn.LayerNorm, biased variance); null when
    /// the kernel does not apply (then the caller's libtorch layer_norm runs).
    /// </summary>
    public static Tensor? TryLayerNorm(Tensor x, Tensor weight, Tensor? bias, double eps)
    {
        long width = weight.numel();
        if (!Applies(x, width) || !IsVector(weight, width) || (bias is not null && !IsVector(bias, width))) return null;
        using var copy = x.is_contiguous() ? null : x.contiguous();
        var input = copy ?? x;
        var y = empty_like(input);
        float* src = (float*)TensorMemory.DataPointer(input), dst = (float*)TensorMemory.DataPointer(y);
        float* w = (float*)TensorMemory.DataPointer(weight), b = bias is null ? null : (float*)TensorMemory.DataPointer(bias);
        for (long r = 0, rows = input.numel() / width; r < rows; r++) LayerNormRow(src + r * width, dst + r * width, (int)width, w, b, (float)eps);
        GC.KeepAlive(input);
        GC.KeepAlive(weight);
        GC.KeepAlive(bias);
        return y;
    }

    /// <summary>weight · x / √(mean(x²) + eps) over the last dimension (Llama's RMSNorm in fp32); null when the kernel does not apply.</summary>
    public static Tensor? TryRmsNorm(Tensor x, Tensor weight, double eps)
    {
        long width = weight.numel();
        if (!Applies(x, width) || !IsVector(weight, width)) return null;
        using var copy = x.is_contiguous() ? null : x.contiguous();
        var input = copy ?? x;
        var y = empty_like(input);
        float* src = (float*)TensorMemory.DataPointer(input), dst = (float*)TensorMemory.DataPointer(y);
        float* w = (float*)TensorMemory.DataPointer(weight);
        for (long r = 0, rows = input.numel() / width; r < rows; r++) RmsNormRow(src + r * width, dst + r * width, (int)width, w, (float)eps);
        GC.KeepAlive(input);
        GC.KeepAlive(weight);
        return y;
    }

    /// <summary>
    /// Whether a kernel of this file or of <see cref="DecodeActivations"/> takes x: 256-bit vectors, a CPU fp32 tensor
    /// of 1 to <see cref="MaxRows"/> rows of <paramref name="width"/>, no gradient wanted.
    /// </summary>
    internal static bool Applies(Tensor x, long width)
    {
        if (!Vector256.IsHardwareAccelerated || x.device_type != DeviceType.CPU || x.dtype != ScalarType.Float32) return false;
        if (is_grad_enabled() && x.requires_grad) return false;
        long dims = x.dim();
        if (dims == 0 || width == 0 || x.size(-1) != width) return false;
        // Sizes one by one: Tensor.shape costs about a microsecond a call.
        long rows = 1;
        for (int i = 0; i < dims - 1; i++) rows *= x.size(i);
        return rows >= 1 && rows <= MaxRows;
    }

    private static bool IsVector(Tensor p, long width) =>
        p.device_type == DeviceType.CPU && p.dtype == ScalarType.Float32 && p.dim() == 1 && p.size(0) == width
        && p.is_contiguous() && !(is_grad_enabled() && p.requires_grad);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void LayerNormRow(float* x, float* y, int n, float* weight, float* bias, float eps)
    {
        float mean = Sum(x, n, 0f, squares: false) / n;
        float variance = Sum(x, n, mean, squares: true) / n;
        float scale = 1f / MathF.Sqrt(variance + eps);
        var m = Vector256.Create(mean);
        var s = Vector256.Create(scale);
        int whole = n / Lanes * Lanes;
        for (int k = 0; k < whole; k += Lanes)
        {
            var normed = (Vector256.Load(x + k) - m) * s;
            var w = Vector256.Load(weight + k);
            Vector256.Store(bias == null ? normed * w : Vector256.FusedMultiplyAdd(normed, w, Vector256.Load(bias + k)), y + k);
        }
        for (int k = whole; k < n; k++)
        {
            float normed = (x[k] - mean) * scale;
            y[k] = bias == null ? normed * weight[k] : MathF.FusedMultiplyAdd(normed, weight[k], bias[k]);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RmsNormRow(float* x, float* y, int n, float* weight, float eps)
    {
        float scale = 1f / MathF.Sqrt(Sum(x, n, 0f, squares: true) / n + eps);
        var s = Vector256.Create(scale);
        int whole = n / Lanes * Lanes;
        // As HF: weight · (x · scale), rounded in that order.
        for (int k = 0; k < whole; k += Lanes)
            Vector256.Store(Vector256.Load(weight + k) * (Vector256.Load(x + k) * s), y + k);
        for (int k = whole; k < n; k++) y[k] = weight[k] * (x[k] * scale);
    }

    /// <summary>Σ x or Σ (x − shift)² along a row: two 8-lane partial sums, a fixed horizontal sum, then the tail in order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Sum(float* x, int n, float shift, bool squares)
    {
        Vector256<float> a0 = default, a1 = default;
        var c = Vector256.Create(shift);
        int pairs = n / (2 * Lanes) * (2 * Lanes), whole = n / Lanes * Lanes, k = 0;
        for (; k < pairs; k += 2 * Lanes)
        {
            var v0 = Vector256.Load(x + k) - c;
            var v1 = Vector256.Load(x + k + Lanes) - c;
            a0 = squares ? Vector256.FusedMultiplyAdd(v0, v0, a0) : a0 + v0;
            a1 = squares ? Vector256.FusedMultiplyAdd(v1, v1, a1) : a1 + v1;
        }
        if (k < whole)
        {
            var v0 = Vector256.Load(x + k) - c;
            a0 = squares ? Vector256.FusedMultiplyAdd(v0, v0, a0) : a0 + v0;
            k += Lanes;
        }
        float sum = Vector256.Sum(a0 + a1);
        for (; k < n; k++)
        {
            float d = x[k] - shift;
            sum += squares ? d * d : d;
        }
        return sum;
    }
}
