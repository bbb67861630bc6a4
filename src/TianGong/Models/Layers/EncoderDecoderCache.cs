namespace TianGong.Models.Layers;

/// <summary>
/// What an encoder-decoder's decoder keeps between steps: its self-attention keys/values, growing by one position
/// per token (a <see cref="KvCache"/>), and each layer's cross-attention keys/values, projected once from the
/// encoder output because that output does not change while decoding.
/// </summary>
public sealed class EncoderDecoderCache : IDisposable
{
    private readonly (Tensor Keys, Tensor Values)?[] cross;

    public EncoderDecoderCache(int layers, long batch, int heads, int maxLength, int headDim, ScalarType dtype, Device device)
    {
        SelfAttention = new KvCache(layers, batch, heads, maxLength, headDim, dtype, device);
        cross = new (Tensor, Tensor)?[layers];
    }

    public KvCache SelfAttention { get; }

    /// <summary>Decoder positions already stored.</summary>
    public int Length => SelfAttention.Length;

    /// <summary>
    /// The cross-attention keys and values (B, heads, S, headDim) of one layer: computed by <paramref name="project"/>
    /// on first use and kept, owned by the cache, for every later step.
    /// </summary>
    public (Tensor Keys, Tensor Values) CrossAttention(int layer, Func<(Tensor Keys, Tensor Values)> project)
    {
        if (cross[layer] is { } kv) return kv;
        var (k, v) = project();
        cross[layer] = (k.DetachFromDisposeScope(), v.DetachFromDisposeScope());
        return cross[layer]!.Value;
    }

    public void Dispose()
    {
        SelfAttention.Dispose();
        foreach (var kv in cross)
        {
            kv?.Keys.Dispose();
            kv?.Values.Dispose();
        }
    }
}
