using F = TorchSharp.torch.nn.functional;

namespace TianGong.Models.Layers;

/// <summary>The logits of an LM head whose weight is the token embedding (V, C): hidden · Wᵀ.</summary>
public static class TiedHead
{
    /// <summary>
    /// From 2 up to this many rows (decode steps of 2–64 streams) inference takes the transposed product on the CPU;
    /// one row (batch-1 decode, where both products ran alike) and more rows (prefill) keep the plain one. Measured
    /// up to 64 rows (docs/benchmarks.md, "Decode step profile").
    /// </summary>
    public const int MaxTransposedRows = 64;

    /// <summary>
    /// Logits (…, V) of hidden states (…, C). In CPU inference over a few rows this computes (W · hiddenᵀ)ᵀ rather than
    /// hidden · Wᵀ: the same dot products, but libtorch then hands MKL the weight as the long side of the product
    /// (sgemm T,N,rows,V,C instead of T,N,V,rows,C), which on the measured machine (MKL 2024.0 on an AMD EPYC) ran
    /// the 16,384 × 512 head 1.4–1.7× faster at 4–64 rows. Under autograd, on other devices, for one row and for
    /// many rows: F.linear.
    /// </summary>
    public static Tensor Logits(Tensor hidden, Tensor weight)
    {
        long width = hidden.shape[^1];
        long rows = hidden.numel() / width;
        bool needGrad = is_grad_enabled() && (hidden.requires_grad || weight.requires_grad);
        if (needGrad || rows < 2 || rows > MaxTransposedRows || weight.device_type != DeviceType.CPU) return F.linear(hidden, weight);
        using var scope = NewDisposeScope();
        var logits = weight.mm(hidden.reshape(rows, width).t()).t().contiguous();              // (rows, V)
        return logits.view([.. hidden.shape[..^1], weight.shape[0]]).MoveToOuterDisposeScope();
    }
}
