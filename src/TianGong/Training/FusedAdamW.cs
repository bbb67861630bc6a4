using System.Numerics;
using System.Runtime.InteropServices;

namespace TianGong.Training;

/// <summary>
/// One AdamW update of an fp32 CPU parameter in a single pass over its memory: weight decay, both moments and the step
/// for each element while it is in registers. Through libtorch ops the same update is about eight passes (decay, lerp,
/// mul, addcmul, sqrt, div, add, addcdiv) and two full-size temporaries per parameter, each pass reading and writing the
/// whole tensor; the optimizer step is memory-bound, so one pass is several times faster. Hand-written because
/// TorchSharp exposes neither PyTorch's fused/foreach AdamW nor its <c>_foreach_*</c> ops. The arithmetic follows
/// libtorch's fp32 kernels term by term (lerp below ½ as <c>m + w·(g − m)</c>, addcmul as <c>v + (c·g)·g</c>).
/// </summary>
internal static class FusedAdamW
{
    private const int Block = 1 << 16; // elements per parallel work item

    /// <summary>Whether <see cref="Step"/> can update these tensors: fp32, CPU, contiguous, each under 2 GB.</summary>
    public static bool Supports(Tensor param, Tensor grad, Tensor expAvg, Tensor expAvgSq) =>
        new[] { param, grad, expAvg, expAvgSq }.All(t => t.dtype == ScalarType.Float32 && t.device_type == DeviceType.CPU && t.is_contiguous())
        && param.numel() < int.MaxValue / sizeof(float);

    /// <param name="lr">This parameter's learning rate.</param>
    /// <param name="bc1">1 − β1^step.</param>
    /// <param name="bc2">1 − β2^step.</param>
    public static void Step(Tensor param, Tensor grad, Tensor expAvg, Tensor expAvgSq, double lr, double weightDecay, AdamWOptions o, double bc1, double bc2)
    {
        var w = MemoryMarshal.Cast<byte, float>(param.bytes);
        int n = w.Length;
        var k = new Constants((float)(1 - lr * weightDecay), weightDecay != 0, (float)(1 - o.Beta1), (float)o.Beta2, (float)(1 - o.Beta2),
            (float)Math.Sqrt(bc2), (float)o.Eps, (float)(-lr / bc1));
        int blocks = (n + Block - 1) / Block;
        if (blocks == 1)
        {
            Update(param, grad, expAvg, expAvgSq, 0, n, k);
            return;
        }
        Parallel.For(0, blocks, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, get_num_threads()) },
            b => Update(param, grad, expAvg, expAvgSq, b * Block, Math.Min(Block, n - b * Block), k));
    }

    private readonly record struct Constants(float Decay, bool Decays, float OneMinusBeta1, float Beta2, float OneMinusBeta2, float SqrtBc2, float Eps, float StepSize);

    private static void Update(Tensor param, Tensor grad, Tensor expAvg, Tensor expAvgSq, int start, int count, Constants k)
    {
        var w = MemoryMarshal.Cast<byte, float>(param.bytes).Slice(start, count);
        var g = MemoryMarshal.Cast<byte, float>(grad.bytes).Slice(start, count);
        var m = MemoryMarshal.Cast<byte, float>(expAvg.bytes).Slice(start, count);
        var v = MemoryMarshal.Cast<byte, float>(expAvgSq.bytes).Slice(start, count);
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var wv = MemoryMarshal.Cast<float, Vector<float>>(w);
            var gv = MemoryMarshal.Cast<float, Vector<float>>(g);
            var mv = MemoryMarshal.Cast<float, Vector<float>>(m);
            var vv = MemoryMarshal.Cast<float, Vector<float>>(v);
            var decay = new Vector<float>(k.Decay);
            var b1 = new Vector<float>(k.OneMinusBeta1);
            var b2 = new Vector<float>(k.Beta2);
            var c2 = new Vector<float>(k.OneMinusBeta2);
            var sq = new Vector<float>(k.SqrtBc2);
            var eps = new Vector<float>(k.Eps);
            var step = new Vector<float>(k.StepSize);
            for (int j = 0; j < wv.Length; j++)
            {
                var gj = gv[j];
                var wj = k.Decays ? wv[j] * decay : wv[j];
                var mj = mv[j] + b1 * (gj - mv[j]);
                var vj = vv[j] * b2 + c2 * gj * gj;
                var denom = Vector.SquareRoot(vj) / sq + eps;
                mv[j] = mj;
                vv[j] = vj;
                wv[j] = wj + step * (mj / denom);
            }
            i = wv.Length * Vector<float>.Count;
        }
        for (; i < count; i++)
        {
            float gj = g[i];
            float wj = k.Decays ? w[i] * k.Decay : w[i];
            float mj = m[i] + k.OneMinusBeta1 * (gj - m[i]);
            float vj = v[i] * k.Beta2 + k.OneMinusBeta2 * gj * gj;
            float denom = MathF.Sqrt(vj) / k.SqrtBc2 + k.Eps;
            m[i] = mj;
            v[i] = vj;
            w[i] = wj + k.StepSize * (mj / denom);
        }
    }
}
