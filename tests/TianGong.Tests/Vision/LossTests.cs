using TianGong.Vision;

namespace TianGong.Tests.Vision;

/// <summary>Every contrastive loss on a case small enough to work out by hand (the expected numbers are written as formulas).</summary>
public class LossTests
{
    private static Tensor Rows(params float[][] rows) => tensor(rows.SelectMany(r => r).ToArray(), [rows.Length, rows[0].Length]);

    private static Tensor Angles(params double[] degrees) =>
        Rows(degrees.Select(d => new[] { (float)Math.Cos(d * Math.PI / 180), (float)Math.Sin(d * Math.PI / 180) }).ToArray());

    [Fact]
    public void InfoNCE_on_two_orthogonal_pairs()
    {
        // logits [[1, 0], [0, 1]] / τ: each row's loss is -log(e^{1/τ} / (e^{1/τ} + 1)). Scale does not matter (normalised).
        using var q = Rows([2, 0], [0, 3]);
        using var k = Rows([1, 0], [0, 1]);
        Assert.Equal(Math.Log(1 + Math.Exp(-1)), ContrastiveLosses.InfoNce(q, k, 1.0).item<float>(), 5);
        Assert.Equal(Math.Log(1 + Math.Exp(-2)), ContrastiveLosses.InfoNce(q, k, 0.5).item<float>(), 5);
        // Swapped keys: the positive is now orthogonal and a negative is aligned.
        using var swapped = Rows([0, 1], [1, 0]);
        Assert.Equal(Math.Log(1 + Math.Exp(1)), ContrastiveLosses.InfoNce(q, swapped, 1.0).item<float>(), 5);
    }

    [Fact]
    public void NT_Xent_excludes_each_view_itself_and_counts_both_directions()
    {
        // Views e1, e2, e1, e2: anchor e1 sees its positive (1) and two negatives (0, 0) → -log(e / (e + 2)).
        using var z = Rows([1, 0], [0, 1]);
        Assert.Equal(Math.Log(1 + 2 / Math.E), ContrastiveLosses.NtXent(z, z, 1.0).item<float>(), 5);
        // Unequal views: z2 = (e1, e1), so the views are e1, e2, e1, e1; worked out anchor by anchor (positive marked):
        using var z2 = Rows([1, 0], [1, 0]);
        double row0 = -Math.Log(Math.E / (1 + Math.E + Math.E));      // e1 vs {e2: 0, e1: 1 (pos), e1: 1}
        double row1 = Math.Log(3);                                     // e2 vs {e1: 0, e1: 0, e1: 0 (pos)}: all equal
        double row2 = -Math.Log(Math.E / (Math.E + 1 + Math.E));       // e1 vs {e1: 1 (pos), e2: 0, e1: 1}
        double row3 = -Math.Log(1 / (Math.E + 1 + Math.E));            // e1 vs {e1, e2 (pos): 0, e1}
        Assert.Equal((row0 + row1 + row2 + row3) / 4, ContrastiveLosses.NtXent(z, z2, 1.0).item<float>(), 5);
    }

    [Fact]
    public void MoCo_puts_the_positive_first_and_the_queue_after_it()
    {
        using var q = Rows([1, 0]);
        using var k = Rows([1, 0]);
        using var queue = Rows([0, 1], [-1, 0]);
        // logits [1, 0, -1] / 0.5 = [2, 0, -2].
        double want = -Math.Log(Math.Exp(2) / (Math.Exp(2) + 1 + Math.Exp(-2)));
        Assert.Equal(want, ContrastiveLosses.MoCoInfoNce(q, k, queue, 0.5).item<float>(), 5);
        // With one positive, CsMI's multi-positive InfoNCE is exactly MoCo's.
        Assert.Equal(want, Csmi.MultiPositiveInfoNce(q, k.unsqueeze(1), queue, 0.5).item<float>(), 5);
    }

    [Fact]
    public void MoCo_sends_no_gradient_into_keys_or_queue()
    {
        using var q = Rows([1, 0.5f]).requires_grad_();
        using var k = Rows([1, 0]).requires_grad_();
        using var queue = Rows([0, 1]).requires_grad_();
        ContrastiveLosses.MoCoInfoNce(q, k, queue, 0.2).backward();
        Assert.NotNull(q.grad);
        Assert.Null(k.grad);
        Assert.Null(queue.grad);
    }

    [Fact]
    public void SupCon_averages_over_every_same_label_positive()
    {
        // Three points at 0°, 90°, 180° (cosines 0, -1, 0 between neighbours), labels a, a, b; τ = 1.
        using var z = Angles(0, 90, 180);
        using var labels = tensor(new long[] { 0, 0, 1 });
        // Anchor 0: positive 1 (cos 0), denominator {1: cos 0, 2: cos -1}; anchor 1: positive 0, denominator {0: 0, 2: 0};
        // anchor 2 has no positive and is left out.
        double a0 = -Math.Log(1 / (1 + Math.Exp(-1))), a1 = -Math.Log(0.5);
        Assert.Equal((a0 + a1) / 2, ContrastiveLosses.SupCon(z, labels, 1.0).item<float>(), 5);
    }

    [Fact]
    public void SCAN_pulls_only_the_nearest_same_label_samples()
    {
        // Angles 0°, 12°, 80°, 5° in class 0 and 1° in class 1. k = 1.
        using var z = Angles(0, 12, 80, 5, 1);
        using var labels = tensor(new long[] { 0, 0, 0, 0, 1 });
        using var positives = ContrastiveLosses.NearestSameLabel(z, labels, 1);
        var rows = Enumerable.Range(0, 5).Select(i => Enumerable.Range(0, 5).Where(j => positives[i, j].item<bool>()).ToArray()).ToArray();
        Assert.Equal([3], rows[0]);          // 5° away, not the 1° sample of the other class
        Assert.Equal([3], rows[1]);          // 7° beats 12°
        Assert.Equal([1], rows[2]);          // 68° beats 75° and 80°
        Assert.Equal([0], rows[3]);          // 5° beats 7°
        Assert.Empty(rows[4]);               // alone in its class
        using var two = ContrastiveLosses.NearestSameLabel(z, labels, 2);
        Assert.Equal([1, 3], Enumerable.Range(0, 5).Where(j => two[0, j].item<bool>()).ToArray());
        // With k at least the class size, SCAN is SupCon.
        Assert.Equal(ContrastiveLosses.SupCon(z, labels, 0.3).item<float>(), ContrastiveLosses.Scan(z, labels, 10, 0.3).item<float>(), 6);
        Assert.NotEqual(ContrastiveLosses.SupCon(z, labels, 0.3).item<float>(), ContrastiveLosses.Scan(z, labels, 1, 0.3).item<float>(), 3);
    }

    [Fact]
    public void CsMI_finds_neighbours_in_the_bank_and_mixes_with_soft_targets()
    {
        using var bank = new MemoryBank(5, 2, seed: 1);
        using var indices = tensor(new long[] { 0, 1, 2, 3, 4 });
        bank.Update(indices, Angles(0, 40, 90, 10, 180));
        using var queries = Angles(1, 85);
        // Query 0 is sample 0 itself (excluded): its nearest others are 3 (10°) then 1 (40°). Query 1 is sample 2.
        using var neighbours = bank.Neighbours(queries, tensor(new long[] { 0, 2 }), 2);
        Assert.Equal(new long[] { 3, 1, 1, 3 }, neighbours.data<long>().ToArray());

        using var anchors = full([2, 1, 2, 2], 1f);
        using var partners = zeros(2, 1, 2, 2);
        using var lambda = tensor(new[] { 0.25f, 1f });
        using var mixed = Csmi.Mix(anchors, partners, lambda);
        Assert.Equal(new[] { 0.25f, 1f }, new[] { mixed[0].mean().item<float>(), mixed[1].mean().item<float>() });

        // Mixed loss: logits [q·k_a, q·k_p, q·queue] = [1, 0, -1] with targets (0.75, 0.25, 0).
        using var q = Rows([1, 0]);
        using var ka = Rows([1, 0]);
        using var kp = Rows([0, 1]);
        using var queue = Rows([-1, 0]);
        double logZ = Math.Log(Math.E + 1 + Math.Exp(-1));
        double want = -(0.75 * (1 - logZ) + 0.25 * (0 - logZ));
        Assert.Equal(want, Csmi.MixedInfoNce(q, ka, kp, queue, tensor(new[] { 0.75f }), 1.0).item<float>(), 5);

        // Whole loss, one level with one neighbour as an extra positive: multi-positive term targets (1/2, 1/2, 0).
        using var neighbourKeys = Rows([0, 1]).unsqueeze(0);                                  // (1, 1, 2)
        double multi = -(0.5 * (1 - logZ) + 0.5 * (0 - logZ));
        var level = new CsmiLevel(q, ka, q, kp, queue, neighbourKeys);
        Assert.Equal(multi + want, Csmi.Loss([level], tensor(new[] { 0.75f }), 1.0).item<float>(), 5);
        Assert.Equal(multi + want, Csmi.Loss([level, level], tensor(new[] { 0.75f }), 1.0).item<float>(), 5);   // a mean over levels
    }

    [Fact]
    public void Queue_is_first_in_first_out_and_the_momentum_update_interpolates()
    {
        using var queue = new FeatureQueue(3, 2, seed: 0);
        queue.Enqueue(Rows([1, 0], [0, 1]));
        queue.Enqueue(Rows([-1, 0], [0, -1]));                // wraps: rows 2 and 0
        Assert.Equal(new[] { 0f, -1f, 0f, 1f, -1f, 0f }, queue.Features.data<float>().ToArray());

        manual_seed(0);
        using var a = nn.Linear(2, 2);
        using var b = nn.Linear(2, 2);
        using var before = a.weight!.detach().clone();
        MomentumEncoder.Update(a, b, 0.9);
        using var want = 0.9 * before + 0.1 * b.weight!.detach();
        Assert.True((a.weight!.detach() - want).abs().max().item<float>() < 1e-6);
    }
}
