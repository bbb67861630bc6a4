using System.Diagnostics;
using TianGong.Models.Layers;
using TianGong.Parallelism.Communication;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Parallelism.TensorParallel;

/// <summary>
/// Part of <c>tiangong launch -n N --check</c>: each tensor-parallel layer, forward and backward, against the whole layer
/// computed on every rank from the same seed (Megatron's tests/unit_tests/tensor_parallel do the same). The output and
/// every gradient must equal the whole layer's (this rank's slice of it, for split tensors).
/// </summary>
public static class TensorParallelCheck
{
    /// <summary>Runs every check over <paramref name="group"/> (all its ranks must call it); throws naming the first difference.</summary>
    public static IReadOnlyList<string> Run(ICommunicator group)
    {
        var lines = new List<string>();
        void Check(string what, Action body)
        {
            var clock = Stopwatch.StartNew();
            using (NewDisposeScope()) body();
            lines.Add($"{what,-28} ok  {clock.Elapsed.TotalMilliseconds,8:F2} ms");
        }
        Check("column-parallel linear", () => ColumnParallel(group));
        Check("row-parallel linear", () => RowParallel(group));
        Check("column→row MLP (Conv1D)", () => ParallelMlp(group));
        Check("vocab-parallel cross-entropy", () => CrossEntropy(group));
        return lines;
    }

    private const long Batch = 2, Length = 3, In = 8, Out = 12;

    private static void ColumnParallel(ICommunicator group)
    {
        manual_seed(11); // the same whole layer and input on every rank
        var whole = nn.Linear(In, Out);
        var x = randn(Batch, Length, In, requires_grad: true);
        var weight = randn(Batch, Length, Out); // d(loss)/d(y): the loss is sum(y · weight)
        (whole.forward(x) * weight).sum().backward();

        var parts = LinearLayers.Describe(whole)!;
        var (shard, wLayout, bLayout) = LinearShards.Columns(parts, group.Rank, group.Size);
        var layer = new ColumnParallelLinear(shard, group, gatherOutput: true);
        var xs = x.detach().clone().requires_grad_(true);
        var y = layer.forward(xs);
        (y * weight).sum().backward();
        Expect(group, "column-parallel output", y, whole.forward(x));
        Expect(group, "column-parallel input gradient", xs.grad!, x.grad!);
        Expect(group, "column-parallel weight gradient", shard.Weight.grad!, wLayout.Slice(whole.weight!.grad!, group.Rank, group.Size));
        Expect(group, "column-parallel bias gradient", shard.Bias!.grad!, bLayout!.Slice(whole.bias!.grad!, group.Rank, group.Size));
    }

    private static void RowParallel(ICommunicator group)
    {
        manual_seed(12);
        var whole = nn.Linear(Out, In);
        var x = randn(Batch, Length, Out, requires_grad: true);
        var weight = randn(Batch, Length, In);
        (whole.forward(x) * weight).sum().backward();

        var (shard, wLayout) = LinearShards.Rows(LinearLayers.Describe(whole)!, group.Rank, group.Size);
        var layer = new RowParallelLinear(shard, group);
        var inputLayout = new ShardLayout(2, Out);
        var xs = inputLayout.Slice(x.detach(), group.Rank, group.Size).requires_grad_(true); // this rank's slice, as a column-parallel layer leaves it
        var y = layer.forward(xs);
        (y * weight).sum().backward();
        Expect(group, "row-parallel output", y, whole.forward(x));
        Expect(group, "row-parallel input gradient", xs.grad!, inputLayout.Slice(x.grad!, group.Rank, group.Size));
        Expect(group, "row-parallel weight gradient", shard.Weight.grad!, wLayout.Slice(whole.weight!.grad!, group.Rank, group.Size));
        Expect(group, "row-parallel bias gradient", shard.Bias!.grad!, whole.bias!.grad!);
    }

    private static void ParallelMlp(ICommunicator group)
    {
        manual_seed(13);
        var up = new Conv1D(In, Out);
        var down = new Conv1D(Out, In);
        using (no_grad())
            foreach (var p in up.parameters().Concat(down.parameters())) p.normal_(0, 0.5);
        var x = randn(Batch, Length, In, requires_grad: true);
        var weight = randn(Batch, Length, In);
        (down.forward(F.gelu(up.forward(x))) * weight).sum().backward();

        var (upShard, upLayout, _) = LinearShards.Columns(LinearLayers.Describe(up)!, group.Rank, group.Size);
        var (downShard, downLayout) = LinearShards.Rows(LinearLayers.Describe(down)!, group.Rank, group.Size);
        var column = new ColumnParallelLinear(upShard, group);
        var row = new RowParallelLinear(downShard, group);
        var xs = x.detach().clone().requires_grad_(true);
        var y = row.forward(F.gelu(column.forward(xs)));
        (y * weight).sum().backward();
        Expect(group, "MLP output", y, down.forward(F.gelu(up.forward(x))));
        Expect(group, "MLP input gradient", xs.grad!, x.grad!);
        Expect(group, "MLP up-projection weight gradient", upShard.Weight.grad!, upLayout.Slice(up.Weight.grad!, group.Rank, group.Size));
        Expect(group, "MLP down-projection weight gradient", downShard.Weight.grad!, downLayout.Slice(down.Weight.grad!, group.Rank, group.Size));
    }

    private static void CrossEntropy(ICommunicator group)
    {
        const long vocab = 11; // not a multiple of most group sizes: the last rank holds fewer rows
        manual_seed(14);
        var logits = (randn(Batch, Length, vocab) * 3).requires_grad_(true);
        var target = randint(0, vocab, [Batch, Length]);
        var loss = F.cross_entropy(logits.reshape(-1, vocab), target.reshape(-1));
        loss.backward();

        var layout = new ShardLayout(2, vocab);
        var (start, length) = layout.Range(group.Rank, group.Size);
        var local = layout.Slice(logits.detach(), group.Rank, group.Size).requires_grad_(true);
        var parallelLoss = VocabParallel.CrossEntropy(local, target, start, length, group);
        parallelLoss.backward();
        Expect(group, "vocab-parallel loss", parallelLoss, loss);
        Expect(group, "vocab-parallel logits gradient", local.grad!, layout.Slice(logits.grad!, group.Rank, group.Size));
    }

    private static void Expect(ICommunicator group, string what, Tensor actual, Tensor expected)
    {
        if (!actual.shape.SequenceEqual(expected.shape) || !allclose(actual.detach(), expected.detach(), rtol: 1e-4, atol: 1e-5))
            throw new TianGongException($"tensor-parallel check on rank {group.WorldRank}: {what} differs from the whole layer's " +
                                        $"(shape [{string.Join(", ", actual.shape)}] vs [{string.Join(", ", expected.shape)}], max difference " +
                                        $"{(actual.shape.SequenceEqual(expected.shape) ? (actual - expected).abs().max().item<float>() : float.NaN)})");
    }
}
