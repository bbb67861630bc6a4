using F = TorchSharp.torch.nn.functional;

namespace TianGong.Models.Layers;

/// <summary>The logits of an LM head whose weight is the token embedding (V, C): hidden · Wᵀ.</summary>
public static class TiedHead
{
    /// <summary>
    /// Logits (…, V) of hidden states (…, C). Up to <see cref="DecodeMatmul.MaxRows"/> rows in CPU inference (a decode
    /// step, a short prompt) go through <see cref="DecodeMatmul"/>, 1.3–2× faster than libtorch at 1–64 rows and
    /// independent of the weight's memory alignment (which the transposed product this replaced was not); everything
    /// else (autograd, other devices, long prompts) through F.linear.
    /// </summary>
    public static Tensor Logits(Tensor hidden, Tensor weight) => DecodeMatmul.TryOutIn(hidden, weight, null) ?? F.linear(hidden, weight);
}
