using F = TorchSharp.torch.nn.functional;

namespace TianGong.Vision;

/// <summary>
/// The contrastive objectives of self-supervised and supervised pretraining, as plain functions of embeddings
/// (every one L2-normalises what it compares, so callers pass raw projection-head outputs). τ is the temperature.
/// </summary>
public static class ContrastiveLosses
{
    /// <summary>
    /// InfoNCE (van den Oord et al. 2018) with in-batch negatives: query i's positive is key i, every other key is a
    /// negative. queries, keys (N, D) → mean over i of -log softmax_j(q_i·k_j / τ)[i].
    /// </summary>
    public static Tensor InfoNce(Tensor queries, Tensor keys, double temperature)
    {
        CheckPair(queries, keys, "InfoNCE");
        using var scope = NewDisposeScope();
        var logits = F.normalize(queries, dim: 1).matmul(F.normalize(keys, dim: 1).t()) / temperature;     // (N, N)
        var targets = arange(queries.shape[0], dtype: ScalarType.Int64, device: queries.device);
        return F.cross_entropy(logits, targets).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// SimCLR's NT-Xent (Chen et al. 2020, eq. 1): the 2N views of a batch, each one's positive the other view of
    /// its image and its negatives the other 2N - 2 views (itself excluded); the mean over all 2N anchors.
    /// </summary>
    public static Tensor NtXent(Tensor firstViews, Tensor secondViews, double temperature)
    {
        CheckPair(firstViews, secondViews, "NT-Xent");
        using var scope = NewDisposeScope();
        long n = firstViews.shape[0];
        var z = F.normalize(cat([firstViews, secondViews], 0), dim: 1);                     // (2N, D)
        var logits = z.matmul(z.t()) / temperature;                                          // (2N, 2N)
        logits = logits.masked_fill(eye(2 * n, dtype: ScalarType.Bool, device: z.device), double.NegativeInfinity);
        var index = arange(n, dtype: ScalarType.Int64, device: z.device);
        var targets = cat([index + n, index], 0);                                            // i ↔ i + N
        return F.cross_entropy(logits, targets).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// MoCo's InfoNCE (He et al. 2020, Algorithm 1): logits [q·k₊, q·queueᵀ] / τ with the positive in column 0.
    /// Keys come from the momentum encoder and the queue from past batches: neither is back-propagated into.
    /// queries, keys (N, D); queue (K, D).
    /// </summary>
    public static Tensor MoCoInfoNce(Tensor queries, Tensor keys, Tensor queue, double temperature)
    {
        CheckPair(queries, keys, "MoCo InfoNCE");
        using var scope = NewDisposeScope();
        var q = F.normalize(queries, dim: 1);
        var positive = (q * F.normalize(keys.detach(), dim: 1)).sum(1, keepdim: true);       // (N, 1)
        var negative = q.matmul(F.normalize(queue.detach(), dim: 1).t());                    // (N, K)
        var logits = cat([positive, negative], 1) / temperature;
        return F.cross_entropy(logits, zeros(q.shape[0], dtype: ScalarType.Int64, device: q.device)).MoveToOuterDisposeScope();
    }

    /// <summary>Cross-entropy against a distribution per row: mean over i of -Σ_j t_ij log softmax(logits_i)_j.</summary>
    public static Tensor SoftTargetCrossEntropy(Tensor logits, Tensor targets)
    {
        if (!logits.shape.SequenceEqual(targets.shape))
            throw new TianGongException($"soft targets: logits ({string.Join(", ", logits.shape)}) and targets ({string.Join(", ", targets.shape)}) differ in shape");
        using var scope = NewDisposeScope();
        return (-(targets * F.log_softmax(logits, 1)).sum(1)).mean().MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Supervised contrastive loss (Khosla et al. 2020, L^sup_out, eq. 2) with an explicit positive set: for anchor i,
    /// -1/|P(i)| Σ_{p∈P(i)} log( exp(z_i·z_p/τ) / Σ_{a≠i} exp(z_i·z_a/τ) ), averaged over the anchors that have a
    /// positive. features (N, D); positives (N, N) bool, P(i) = row i (the diagonal is ignored).
    /// </summary>
    public static Tensor SupConWithPositives(Tensor features, Tensor positives, double temperature)
    {
        long n = features.shape[0];
        if (features.dim() != 2 || !positives.shape.SequenceEqual([n, n]))
            throw new TianGongException($"supervised contrastive: expected features (N, D) and positives (N, N), got ({string.Join(", ", features.shape)}) and ({string.Join(", ", positives.shape)})");
        using var scope = NewDisposeScope();
        var z = F.normalize(features, dim: 1);
        var self = eye(n, dtype: ScalarType.Bool, device: z.device);
        var logits = (z.matmul(z.t()) / temperature).masked_fill(self, double.NegativeInfinity); // A(i) = all a ≠ i
        var logProb = F.log_softmax(logits, 1).masked_fill(self, 0);
        var mask = positives.logical_and(self.logical_not()).to(z.dtype);
        var count = mask.sum(1);                                                             // |P(i)|
        var has = count.gt(0);
        if (!has.any().item<bool>()) throw new TianGongException("supervised contrastive: no anchor has a positive (every label occurs once)");
        var perAnchor = -(mask * logProb).sum(1) / count.clamp_min(1);
        return perAnchor.masked_select(has).mean().MoveToOuterDisposeScope();
    }

    /// <summary>SupCon's positive set: every other sample with the same label.</summary>
    public static Tensor SameLabel(Tensor labels)
    {
        using var scope = NewDisposeScope();
        var same = labels.view(-1, 1).eq(labels.view(1, -1));
        return same.logical_and(eye(labels.shape[0], dtype: ScalarType.Bool, device: labels.device).logical_not()).MoveToOuterDisposeScope();
    }

    /// <summary>Supervised contrastive learning (SupCon): pull every same-label sample, push the rest.</summary>
    public static Tensor SupCon(Tensor features, Tensor labels, double temperature)
    {
        using var scope = NewDisposeScope();
        return SupConWithPositives(features, SameLabel(labels), temperature).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// SCAN's positive set ("not all samples of one class should be pulled together", issue 13): among the samples
    /// with anchor i's label, only the k most cosine-similar to it in the current feature space (all of them when the
    /// class has k or fewer others). Similarities are taken without gradient: the selection is a target, not a path.
    /// </summary>
    public static Tensor NearestSameLabel(Tensor features, Tensor labels, int k)
    {
        if (k <= 0) throw new TianGongException($"SCAN neighbours: k must be positive, got {k}");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var z = F.normalize(features.detach(), dim: 1);
        var candidates = SameLabel(labels);                                                  // (N, N)
        var similarity = z.matmul(z.t()).masked_fill(candidates.logical_not(), double.NegativeInfinity);
        var nearest = similarity.topk((int)Math.Min(k, features.shape[0]), dim: 1).indexes;  // (N, k)
        var chosen = zeros_like(candidates).scatter(1, nearest, ones_like(nearest, dtype: ScalarType.Bool));
        // A class smaller than k + 1 leaves -inf columns among the top k: keep only real candidates.
        return chosen.logical_and(candidates).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// SCAN: SupCon whose positives are each anchor's k nearest same-label samples; the denominator keeps every other
    /// sample, so same-label samples that are not among the k are pushed like other classes ("pull only each anchor's
    /// k nearest, push the rest", as issue 13 states it; the denominator is SupCon's A(i)).
    /// </summary>
    public static Tensor Scan(Tensor features, Tensor labels, int k, double temperature)
    {
        using var scope = NewDisposeScope();
        return SupConWithPositives(features, NearestSameLabel(features, labels, k), temperature).MoveToOuterDisposeScope();
    }

    private static void CheckPair(Tensor a, Tensor b, string what)
    {
        if (a.dim() != 2 || !a.shape.SequenceEqual(b.shape))
            throw new TianGongException($"{what}: expected two (N, D) tensors of one shape, got ({string.Join(", ", a.shape)}) and ({string.Join(", ", b.shape)})");
    }
}
