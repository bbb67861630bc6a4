using F = TorchSharp.torch.nn.functional;

namespace TianGong.Models.Layers;

/// <summary>The logits of an LM head whose weight is the token embedding (V, C): hidden · Wᵀ.</summary>
public static class TiedHead
{
    /// <summary>
    /// From 2 up to this many sequences (decode steps of 2–64 streams) inference takes the transposed product on the
    /// CPU; one sequence (batch-1 decode, where both products ran alike) and calls over several positions (prefill)
    /// keep the plain one. Measured up to 64 rows (docs/benchmarks.md, "Decode step profile").
    /// </summary>
    public const int MaxTransposedRows = 64;

    /// <summary>
    /// Logits (…, V) of hidden states (…, C). For a decode step of a few sequences in CPU inference, hidden (B, 1, C)
    /// with 2 ≤ B ≤ <see cref="MaxTransposedRows"/>, this computes (W · hiddenᵀ)ᵀ rather than hidden · Wᵀ: the same
    /// dot products, but libtorch then hands MKL the weight as the long side of the product (sgemm T,N,B,V,C instead
    /// of T,N,V,B,C), which on the measured machine (MKL 2024.0 on an AMD EPYC) ran the 16,384 × 512 head 1.2–1.7×
    /// faster at 4–64 rows. Its last bits depend on the weight's memory alignment (4.8e-7 between a memory-mapped
    /// checkpoint and a fresh copy of it), which is why prefill, whose logits tests compare bit for bit across load
    /// paths, keeps F.linear; so do autograd, other devices and one sequence.
    /// </summary>
    public static Tensor Logits(Tensor hidden, Tensor weight)
    {
        if (DecodeMatmul.TryOutIn(hidden, weight, null) is { } decoded) return decoded; // a decode step's few rows
        bool needGrad = is_grad_enabled() && (hidden.requires_grad || weight.requires_grad);
        if (needGrad || weight.device_type != DeviceType.CPU || hidden.dim() != 3) return F.linear(hidden, weight);
        var (batch, positions, width) = (hidden.shape[0], hidden.shape[1], hidden.shape[2]);
        if (positions != 1 || batch < 2 || batch > MaxTransposedRows) return F.linear(hidden, weight);
        using var scope = NewDisposeScope();
        var logits = weight.mm(hidden.view(batch, width).t()).t().contiguous();                // (B, V)
        return logits.view(batch, 1, weight.shape[0]).MoveToOuterDisposeScope();
    }
}
