namespace TianGong.Models.Layers;

/// <summary>Scaled dot-product attention over (B, heads, T, headDim) tensors, causal, with optional KV cache.</summary>
public static class Attention
{
    /// <summary>
    /// q holds the T newest positions; k, v hold all S positions (S = past + T).
    /// libtorch's is_causal aligns the mask to the top-left, which is right only when S == T, so a
    /// cached prefill of several tokens gets an explicit bottom-right-aligned mask instead.
    /// A per-row cache passes its (B, 1, T, S) mask instead, which already holds causality and each row's length.
    /// </summary>
    public static Tensor Causal(Tensor q, Tensor k, Tensor v, double dropout = 0.0, Tensor? mask = null)
    {
        if (mask is not null)
            return nn.functional.scaled_dot_product_attention(q, k, v, mask, p: dropout);
        long t = q.shape[2], s = k.shape[2];
        if (t == s)
            return nn.functional.scaled_dot_product_attention(q, k, v, p: dropout, is_casual: true);
        if (t == 1)
            return nn.functional.scaled_dot_product_attention(q, k, v, p: dropout);
        using var tril = ones([t, s], ScalarType.Bool, q.device).tril(s - t);
        return nn.functional.scaled_dot_product_attention(q, k, v, tril, p: dropout);
    }

    /// <summary>
    /// Attention of a decoder layer under its call's context: the context's mask (padding, per-row lengths, the
    /// layer's sliding <paramref name="window"/>), or libtorch's causal path when that is exact.
    /// </summary>
    public static Tensor Decoder(Tensor q, Tensor k, Tensor v, AttentionContext context, int? window = null, double dropout = 0.0)
    {
        var mask = context.MaskFor(window);
        Tensor Core(Tensor[] qkv) => mask is not null
            ? nn.functional.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], mask, p: dropout)
            : Causal(qkv[0], qkv[1], qkv[2], dropout);
        return context.RecomputeCore ? Recomputation.Checkpoint(Core, q, k, v) : Core([q, k, v]);
    }

    /// <summary>Grouped-query attention: repeats each of the kvHeads key/value heads for its group of query heads.</summary>
    public static Tensor RepeatKv(Tensor x, int groups)
    {
        if (groups == 1) return x.alias();
        var (b, h, t, d) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
        return x.unsqueeze(2).expand(b, h, groups, t, d).reshape(b, h * groups, t, d);
    }
}
