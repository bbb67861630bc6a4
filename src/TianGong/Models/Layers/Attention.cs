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
    /// Causal attention where each query sees only the <paramref name="window"/> newest positions up to and including
    /// its own (Mistral's and Qwen2's sliding_window, as transformers' masking_utils: kv &gt; q − window).
    /// q holds the T newest of the S positions in k, v, so query i sits at position S − T + i.
    /// </summary>
    public static Tensor SlidingWindow(Tensor q, Tensor k, Tensor v, int window, double dropout = 0.0)
    {
        long t = q.shape[2], s = k.shape[2];
        if (window >= s) return Causal(q, k, v, dropout); // nothing falls out of the window
        using var mask = SlidingWindowMask(t, s, window, q.device);
        return nn.functional.scaled_dot_product_attention(q, k, v, mask, p: dropout);
    }

    /// <summary>(T, S) bool mask, True = attend: key j is visible to query i when 0 ≤ (S − T + i) − j &lt; window.</summary>
    public static Tensor SlidingWindowMask(long t, long s, int window, Device? device = null)
    {
        using var scope = NewDisposeScope();
        var distance = arange(s - t, s, device: device).unsqueeze(1) - arange(s, device: device).unsqueeze(0); // (T, S)
        return distance.ge(0).logical_and(distance.lt(window)).MoveToOuterDisposeScope();
    }

    /// <summary>Grouped-query attention: repeats each of the kvHeads key/value heads for its group of query heads.</summary>
    public static Tensor RepeatKv(Tensor x, int groups)
    {
        if (groups == 1) return x.alias();
        var (b, h, t, d) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
        return x.unsqueeze(2).expand(b, h, groups, t, d).reshape(b, h * groups, t, d);
    }

    /// <summary>
    /// The sliding-window part of a per-row mask: query at position p sees key slot j only when p − j &lt; window.
    /// positions (B or 1, T) → (B or 1, 1, T, S); combine it with the causal/length mask.
    /// </summary>
    public static Tensor WindowMask(Tensor positions, long s, int window)
    {
        using var scope = NewDisposeScope();
        var distance = positions.unsqueeze(-1) - arange(s, dtype: ScalarType.Int64, device: positions.device); // (B, T, S)
        return (distance < window).unsqueeze(1).MoveToOuterDisposeScope();
    }
}
