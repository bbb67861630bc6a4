namespace TianGong.Models.Layers;

/// <summary>
/// Rotary position tables (cos, sin) for every position up to the context length, computed once.
/// Uses the "rotate half" layout of HF Llama: frequencies are duplicated as [f0..f(d/2-1), f0..f(d/2-1)].
/// </summary>
public sealed class RotaryEmbedding : IDisposable
{
    private readonly Tensor cos; // (maxPositions, headDim)
    private readonly Tensor sin; // (maxPositions, headDim)

    public RotaryEmbedding(int headDim, int maxPositions, double theta)
    {
        using var scope = NewDisposeScope();
        var invFreq = 1.0 / pow(theta, arange(0, headDim, 2, dtype: ScalarType.Float64) / headDim); // (d/2)
        var angles = outer(arange(maxPositions, dtype: ScalarType.Float64), invFreq);            // (P, d/2)
        var emb = cat([angles, angles], dim: -1);
        cos = emb.cos().to(ScalarType.Float32).MoveToOuterDisposeScope();
        sin = emb.sin().to(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    public int MaxPositions => (int)cos.shape[0];

    /// <summary>Rotates q or k, shaped (B, heads, T, headDim), for positions start..start+T-1.</summary>
    public Tensor Apply(Tensor x, int start)
    {
        using var scope = NewDisposeScope();
        long t = x.shape[2];
        var c = cos.narrow(0, start, t).to(x.dtype, x.device);
        var s = sin.narrow(0, start, t).to(x.dtype, x.device);
        return (x * c + RotateHalf(x) * s).MoveToOuterDisposeScope();
    }

    /// <summary>Rotates q or k, shaped (B, heads, T, headDim), each row at its own positions (B or 1, T).</summary>
    public Tensor Apply(Tensor x, Tensor positions)
    {
        using var scope = NewDisposeScope();
        var (b, t, d) = (positions.shape[0], positions.shape[1], x.shape[3]);
        var flat = positions.reshape(-1).to(cos.device);
        var c = cos.index_select(0, flat).view(b, 1, t, d).to(x.dtype, x.device);            // (B, 1, T, D)
        var s = sin.index_select(0, flat).view(b, 1, t, d).to(x.dtype, x.device);
        return (x * c + RotateHalf(x) * s).MoveToOuterDisposeScope();
    }

    private static Tensor RotateHalf(Tensor x)
    {
        long half = x.shape[^1] / 2;
        return cat([-x.narrow(-1, half, half), x.narrow(-1, 0, half)], dim: -1);
    }

    public void Dispose()
    {
        cos.Dispose();
        sin.Dispose();
    }
}
