using TianGong.Data;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Vision;

// CsMl / CsMI: "Seed the Views: Hierarchical Semantic Alignment for Contrastive Representation Learning",
// Xu, Zhang, Li, Xie, Xiong and Tian (arXiv 2012.02733, TPAMI 2022), the self-supervised method of Pangu CV, built
// on MoCo. Not all different images should be pushed apart: each image's semantic nearest neighbours, found in a
// memory bank of momentum features, are (1) extra positives of the anchor, and (2) mixed into the anchor image, the
// mixed image's target being split between the two keys by the mixing ratio, at several levels (stages) of the
// backbone, each with its own projection head and queue. What is implemented here, per level l:
//   L_l = L_multi(q_l ; {k_l} ∪ bank neighbours)  [top level only: the bank holds top-level features]
//       + L_mix(q̃_l ; λ on k_l(anchor), 1 - λ on k_l(partner))
//   L   = mean over levels of L_l,
// where L_multi is InfoNCE against the queue with the target spread evenly over the positives (it is MoCo's InfoNCE
// when there are no neighbours), L_mix the same with the soft target (λ, 1 - λ), and q̃ the query of the mixup image
// λ·x + (1 - λ)·x_partner with λ ~ U(0, 1) (mixup with α = 1; the paper's choice of mixing operation is not
// reproduced exactly: image-level mixup is what issue 13 asks for).

/// <summary>
/// One L2-normalised feature per training sample (Wu et al. 2018's memory bank), written with each batch's momentum
/// keys; CsMI looks up every anchor's semantic neighbours here, by dataset index.
/// </summary>
public sealed class MemoryBank : IDisposable
{
    /// <summary>(N, D): row i is sample i's latest key.</summary>
    public Tensor Features { get; }

    /// <summary>Starts from random unit vectors drawn from <paramref name="seed"/>, so early neighbours are arbitrary, not all equal.</summary>
    public MemoryBank(long size, long dim, long seed)
    {
        if (size <= 1 || dim <= 0) throw new TianGongException($"memory bank: needs at least 2 samples and a positive dimension, got {size} × {dim}");
        using var generator = new Generator((ulong)seed);
        Features = F.normalize(randn([size, dim], generator: generator), dim: 1);
    }

    public void Update(Tensor indices, Tensor keys)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        Features.index_copy_(0, indices, F.normalize(keys.detach().to(Features.dtype), dim: 1));
    }

    /// <summary>
    /// The dataset indices (B, k) of the k bank entries most cosine-similar to each query (B, D), the query's own
    /// sample (selfIndices, (B)) excluded; most similar first.
    /// </summary>
    public Tensor Neighbours(Tensor queries, Tensor selfIndices, int k)
    {
        if (k <= 0 || k >= Features.shape[0]) throw new TianGongException($"memory bank: k must be in 1..{Features.shape[0] - 1}, got {k}");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var similarity = F.normalize(queries.detach(), dim: 1).matmul(Features.t());        // (B, N)
        similarity = similarity.scatter(1, selfIndices.view(-1, 1), full([selfIndices.shape[0], 1], double.NegativeInfinity));
        return similarity.topk(k, dim: 1).indexes.MoveToOuterDisposeScope();
    }

    public void Dispose() => Features.Dispose();
}

/// <summary>MoCo's queue of negatives (K, D): each batch's keys replace the oldest, first in, first out.</summary>
public sealed class FeatureQueue : IDisposable
{
    private long next;

    public Tensor Features { get; }

    public FeatureQueue(long size, long dim, long seed)
    {
        if (size <= 0 || dim <= 0) throw new TianGongException($"queue: size and dimension must be positive, got {size} × {dim}");
        using var generator = new Generator((ulong)seed);
        Features = F.normalize(randn([size, dim], generator: generator), dim: 1);
    }

    public void Enqueue(Tensor keys)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        long size = Features.shape[0], b = keys.shape[0];
        if (b > size) throw new TianGongException($"queue: a batch of {b} keys does not fit a queue of {size}");
        var rows = (arange(b, dtype: ScalarType.Int64) + next) % size;
        Features.index_copy_(0, rows, F.normalize(keys.detach().to(Features.dtype), dim: 1));
        next = (next + b) % size;
    }

    public void Dispose() => Features.Dispose();
}

public static class MomentumEncoder
{
    /// <summary>
    /// MoCo's key-encoder update θ_k ← m·θ_k + (1 - m)·θ_q, parameter by parameter (same architecture, same order).
    /// Buffers (BatchNorm statistics) are not averaged: the key encoder keeps its own, as in MoCo.
    /// </summary>
    public static void Update(nn.Module keyEncoder, nn.Module queryEncoder, double momentum)
    {
        if (momentum is < 0 or > 1) throw new TianGongException($"momentum: must be in [0, 1], got {momentum}");
        using var _ = no_grad();
        var keys = keyEncoder.parameters().ToList();
        var queries = queryEncoder.parameters().ToList();
        if (keys.Count != queries.Count) throw new TianGongException("momentum encoder: the two encoders have different parameters");
        for (int i = 0; i < keys.Count; i++) keys[i].mul_(momentum).add_(queries[i], alpha: 1 - momentum);
    }
}

/// <summary>What one level of the hierarchy contributes to the CsMI loss (see the file header for the formula).</summary>
/// <param name="Query">(B, D): the query encoder's projection of the anchor's view.</param>
/// <param name="Key">(B, D): the momentum encoder's projection of the anchor's other view.</param>
/// <param name="MixedQuery">(B, D): the query encoder's projection of the mixed image.</param>
/// <param name="PartnerKey">(B, D): the momentum encoder's projection of the neighbour the anchor was mixed with.</param>
/// <param name="Queue">(K, D): this level's negatives.</param>
/// <param name="NeighbourKeys">(B, k, D) bank features of the anchor's neighbours, extra positives; null below the top level.</param>
public sealed record CsmiLevel(Tensor Query, Tensor Key, Tensor MixedQuery, Tensor PartnerKey, Tensor Queue, Tensor? NeighbourKeys = null);

public static class Csmi
{
    /// <summary>The mixing ratio λ per image, U(0, 1) (mixup with α = 1), from the step's generator.</summary>
    public static Tensor SampleLambda(long batch, long seed, long step)
    {
        using var generator = new Generator(SplitMix64.Hash((ulong)seed, (ulong)step, 0xC5A1));
        return rand([batch], generator: generator);
    }

    /// <summary>Image-level mixup of each anchor with its partner: λ·x + (1 - λ)·partner, images (B, C, H, W), λ (B).</summary>
    public static Tensor Mix(Tensor anchors, Tensor partners, Tensor lambda)
    {
        if (!anchors.shape.SequenceEqual(partners.shape) || lambda.dim() != 1 || lambda.shape[0] != anchors.shape[0])
            throw new TianGongException($"CsMI mixing: expected anchors and partners of one shape and one λ per image, got ({string.Join(", ", anchors.shape)}), ({string.Join(", ", partners.shape)}) and ({string.Join(", ", lambda.shape)})");
        using var scope = NewDisposeScope();
        var l = lambda.to(anchors.dtype).view(-1, 1, 1, 1);
        return (l * anchors + (1 - l) * partners).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// InfoNCE with several positives: logits [q·p_1, ..., q·p_P, q·queueᵀ] / τ against the target 1/P on each
    /// positive. query (B, D), positives (B, P, D), queue (K, D). With P = 1 it is MoCo's InfoNCE.
    /// </summary>
    public static Tensor MultiPositiveInfoNce(Tensor query, Tensor positives, Tensor queue, double temperature)
    {
        using var scope = NewDisposeScope();
        long p = positives.shape[1];
        var targets = cat([full([query.shape[0], p], 1.0 / p), zeros(query.shape[0], queue.shape[0])], 1);
        return SoftInfoNce(query, positives, queue, targets, temperature).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The mixed image's loss: logits [q̃·k_anchor, q̃·k_partner, q̃·queueᵀ] / τ against (λ, 1 - λ, 0, ...).
    /// </summary>
    public static Tensor MixedInfoNce(Tensor mixedQuery, Tensor anchorKey, Tensor partnerKey, Tensor queue, Tensor lambda, double temperature)
    {
        using var scope = NewDisposeScope();
        var l = lambda.to(mixedQuery.dtype).view(-1, 1);
        var targets = cat([l, 1 - l, zeros(mixedQuery.shape[0], queue.shape[0])], 1);
        return SoftInfoNce(mixedQuery, stack([anchorKey, partnerKey], 1), queue, targets, temperature).MoveToOuterDisposeScope();
    }

    /// <summary>L = mean over levels of (multi-positive InfoNCE of the anchor + mixed InfoNCE of the mixed image).</summary>
    public static Tensor Loss(IReadOnlyList<CsmiLevel> levels, Tensor lambda, double temperature)
    {
        if (levels.Count == 0) throw new TianGongException("CsMI: needs at least one level");
        using var scope = NewDisposeScope();
        Tensor? total = null;
        foreach (var level in levels)
        {
            var positives = level.NeighbourKeys is null
                ? level.Key.unsqueeze(1)
                : cat([level.Key.unsqueeze(1), level.NeighbourKeys], 1);                     // (B, 1 + k, D)
            var term = MultiPositiveInfoNce(level.Query, positives, level.Queue, temperature)
                + MixedInfoNce(level.MixedQuery, level.Key, level.PartnerKey, level.Queue, lambda, temperature);
            total = total is null ? term : total + term;
        }
        return (total! / levels.Count).MoveToOuterDisposeScope();
    }

    // Keys, neighbours and the queue are targets from the momentum encoder and the bank: no gradient flows into them.
    private static Tensor SoftInfoNce(Tensor query, Tensor positives, Tensor queue, Tensor targets, double temperature)
    {
        var q = F.normalize(query, dim: 1);                                                  // (B, D)
        var pos = F.normalize(positives.detach(), dim: 2);                                   // (B, P, D)
        var positiveLogits = (pos * q.unsqueeze(1)).sum(2);                                  // (B, P)
        var negativeLogits = q.matmul(F.normalize(queue.detach(), dim: 1).t());              // (B, K)
        var logits = cat([positiveLogits, negativeLogits], 1) / temperature;
        return ContrastiveLosses.SoftTargetCrossEntropy(logits, targets.to(logits.dtype));
    }
}
