namespace TianGong.Models.Layers;

/// <summary>
/// Keys and values of every layer for incremental decoding, preallocated to the maximum length
/// so that a decode step writes one slot instead of concatenating (which would copy the whole cache each token).
/// </summary>
public sealed class KvCache : IDisposable
{
    private readonly Tensor[] keys;   // per layer (B, kvHeads, maxLen, headDim)
    private readonly Tensor[] values;

    public KvCache(int layers, long batch, int kvHeads, int maxLength, int headDim, ScalarType dtype, Device device)
    {
        keys = new Tensor[layers];
        values = new Tensor[layers];
        for (int i = 0; i < layers; i++)
        {
            keys[i] = zeros([batch, kvHeads, maxLength, headDim], dtype, device);
            values[i] = zeros([batch, kvHeads, maxLength, headDim], dtype, device);
        }
        MaxLength = maxLength;
    }

    /// <summary>Number of positions already stored (the same for every layer between forward calls).</summary>
    public int Length { get; private set; }

    public int MaxLength { get; }

    /// <summary>Stores k, v (B, kvHeads, T, headDim) at positions Length..Length+T-1 of one layer and returns views of everything stored so far.</summary>
    public (Tensor Keys, Tensor Values) Append(int layer, Tensor k, Tensor v)
    {
        long t = k.shape[2];
        if (Length + t > MaxLength)
            throw new TianGongException($"KV cache is full: {Length} + {t} positions exceed its capacity of {MaxLength}");
        using (no_grad())
        {
            keys[layer].narrow(2, Length, t).copy_(k);
            values[layer].narrow(2, Length, t).copy_(v);
        }
        return (keys[layer].narrow(2, 0, Length + t), values[layer].narrow(2, 0, Length + t));
    }

    /// <summary>Called by the model once every layer has appended the same T positions.</summary>
    public void Advance(int positions) => Length += positions;

    /// <summary>Forgets everything stored, keeping the memory for the next sequence.</summary>
    public void Reset() => Length = 0;

    public void Dispose()
    {
        foreach (var t in keys) t.Dispose();
        foreach (var t in values) t.Dispose();
    }
}
