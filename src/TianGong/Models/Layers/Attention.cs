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
        if (IsGpuDecodeStep(q, dropout))
            return OneQuery(q, k, v, mask);
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
        Tensor Core(Tensor[] qkv) => Causal(qkv[0], qkv[1], qkv[2], dropout, mask);
        return context.RecomputeCore ? Recomputation.Checkpoint(Core, q, k, v) : Core([q, k, v]);
    }

    /// <summary>One query per row on a GPU, without dropout: a KV-cache decode step.</summary>
    /// <remarks>
    /// libtorch's scaled_dot_product_attention picks cuDNN's attention on Hopper GPUs, and cuDNN builds an execution plan
    /// for every new key length. A decode step's key length grows by one each token, so every step rebuilt a plan in
    /// every layer: 50–72 ms a step on an H200 for 2 layers as for 24 (the host's time, 2.5 ms a call in the profile;
    /// transformers on the same machine did the same, 67–78 ms). <see cref="OneQuery"/> needs no plan.
    /// </remarks>
    private static bool IsGpuDecodeStep(Tensor q, double dropout) => q.device_type == DeviceType.CUDA && q.shape[2] == 1 && dropout == 0;

    /// <summary>
    /// Attention of one query per row as two batched products around a float32 softmax (what libtorch's math backend
    /// computes, and transformers' eager attention): q (B, H, 1, D), k and v (B, H, S, D), mask (B or 1, 1, 1, S) bool or
    /// null (every key visible). Exact on any device; used for GPU decode steps (<see cref="IsGpuDecodeStep"/>).
    /// </summary>
    public static Tensor OneQuery(Tensor q, Tensor k, Tensor v, Tensor? mask)
    {
        using var scope = NewDisposeScope();
        var scores = (q * (1.0 / Math.Sqrt(q.shape[^1]))).matmul(k.transpose(-2, -1)); // (B, H, 1, S)
        if (mask is not null) scores = scores.masked_fill(mask.logical_not(), double.NegativeInfinity);
        var weights = scores.softmax(-1, ScalarType.Float32).to(q.dtype);
        return weights.matmul(v).MoveToOuterDisposeScope();
    }

    /// <summary>Grouped-query attention: repeats each of the kvHeads key/value heads for its group of query heads.</summary>
    public static Tensor RepeatKv(Tensor x, int groups)
    {
        if (groups == 1) return x.alias();
        var (b, h, t, d) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
        return x.unsqueeze(2).expand(b, h, groups, t, d).reshape(b, h * groups, t, d);
    }
}
