using F = TorchSharp.torch.nn.functional;

namespace TianGong.Models.Layers;

/// <summary>The logits of an LM head whose weight is the token embedding (V, C): hidden · Wᵀ.</summary>
public static class TiedHead
{
    /// <summary>
    /// Logits (…, V) of hidden states (…, C). Up to <see cref="DecodeMatmul.MaxRows"/> rows in CPU inference (a decode
    /// step, a short prompt) go through <see cref="DecodeMatmul"/>: on the 16,384 × 512 head 2.3× faster than F.linear
    /// at 1 row and 1.3–2.1× faster than the transposed product (W·hᵀ)ᵀ this replaced at 16–64 rows, which won only
    /// near 4 rows (by 10–17 %) and whose last bits depended on the batch and the weight's address; the kernel's do
    /// not. Everything else (training, autograd, other devices, long prompts) goes through F.linear: in training even
    /// under no_grad, so a recomputed forward pass has the bits of the first (as the other layers' decode paths).
    /// </summary>
    public static Tensor Logits(Tensor hidden, Tensor weight, bool training = false) =>
        (training ? null : DecodeMatmul.TryOutIn(hidden, weight, null)) ?? F.linear(hidden, weight);
}
