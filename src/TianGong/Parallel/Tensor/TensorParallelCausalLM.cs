using TianGong.Models;
using TianGong.Parallelism.Communication;
using TianGong.Training;

namespace TianGong.Parallelism.TensorParallel;

/// <summary>
/// One tensor-parallel rank's part of a causal language model, made from the whole model (built identically on every
/// rank from the same seed, then split by its family's <see cref="TensorParallelPlan"/>, so initialisation is exactly
/// that of one process). Its children are the model's own, so its parameter names are the Hugging Face ones. It adds
/// what tensor parallelism needs around the layers: the vocabulary-parallel embedding lookup and cross-entropy
/// (Megatron's VocabParallelEmbedding and vocab_parallel_cross_entropy: no rank ever holds the whole logits), and
/// <see cref="WholeState"/>, which assembles the one-process state dict for checkpoints.
/// </summary>
/// <remarks>
/// Random numbers: the parts every rank holds whole (residual and embedding dropout) must draw the same values on every
/// tensor-parallel rank, so the ranks of one tensor-parallel group share one generator seed (that of the group's first
/// rank, see <see cref="DistributedTraining.Context"/>). Dropout inside the split attention therefore also draws the same
/// stream on each rank for different heads; Megatron gives those a separate per-rank stream instead. With dropout 0
/// (as the parity tests run) the result equals one process's.
/// </remarks>
public sealed class TensorParallelCausalLM : nn.Module<Tensor, Tensor>
{
    private readonly CausalLM inner;
    private readonly ICommunicator group;
    private readonly IReadOnlyDictionary<string, ShardLayout> layouts;
    private readonly ShardLayout vocabulary;
    private Dictionary<string, Tensor>? whole; // the one-process state dict, only while WholeState() is open

    private TensorParallelCausalLM(CausalLM inner, ICommunicator group, Dictionary<string, ShardLayout> layouts, ShardLayout vocabulary)
        : base(nameof(TensorParallelCausalLM))
    {
        this.inner = inner;
        this.group = group;
        this.layouts = layouts;
        this.vocabulary = vocabulary;
        // The model's children become this module's, so names stay model.layers.0... and not inner.model.layers.0...
        foreach (var (name, child) in inner.named_children()) register_module(name, child);
    }

    /// <summary>Splits <paramref name="model"/> in place by its family's plan; every rank of <paramref name="group"/> calls it with the same whole model.</summary>
    public static TensorParallelCausalLM Shard(CausalLM model, ICommunicator group)
    {
        var plan = TensorParallelPlan.For(model.Config);
        var layouts = plan.Apply(model, group);
        return new TensorParallelCausalLM(model, group, layouts, layouts[plan.TokenEmbedding + ".weight"]);
    }

    public ICausalLMConfig Config => inner.Config;

    /// <summary>How each split parameter is laid out over the ranks, by state-dict name (absent: whole on every rank).</summary>
    public IReadOnlyDictionary<string, ShardLayout> Layouts => layouts;

    public ICommunicator Group => group;

    /// <summary>First vocabulary id of this rank's rows and how many it holds.</summary>
    public (long Start, long Length) VocabularyRange => vocabulary.Range(group.Rank, group.Size);

    /// <summary>Next-token cross-entropy, vocabulary-parallel: the trainer's loss function for a tensor-parallel model.</summary>
    public LossRecord NextTokenLoss(nn.Module _, TokenBatch batch) =>
        new(VocabParallelCrossEntropy(LocalLogits(batch.Input), batch.Target), batch.Input.shape[0]);

    /// <summary>This rank's slice of the logits (B, T, its vocabulary rows) for token ids (B, T).</summary>
    public Tensor LocalLogits(Tensor inputIds)
    {
        using var scope = NewDisposeScope();
        var trunk = inner.Trunk(new DecoderInput { InputsEmbeds = Embed(inputIds) });        // (B, T, C), whole on every rank
        // Each rank projects onto its vocabulary rows: the hidden state's gradient is the sum over the ranks.
        return inner.LmHead(TensorParallelMappings.CopyToRegion(trunk.LastHiddenState, group)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// A last pipeline stage's head under tensor parallelism: this rank's vocabulary slice of the logits, all-gathered into
    /// the whole (B, T, V) with autograd (backward keeps this rank's slice), so the stage's loss is the ordinary one.
    /// Needs equal slices (vocabulary a multiple of tp), which <see cref="DistributedTraining"/> checks.
    /// </summary>
    public Tensor GatheredLogits(Tensor hidden)
    {
        using var scope = NewDisposeScope();
        var local = inner.LmHead(TensorParallelMappings.CopyToRegion(hidden, group));        // (B, T, V/tp)
        return TensorParallelMappings.GatherFromRegion(local, group).MoveToOuterDisposeScope();
    }

    /// <summary>The whole logits (B, T, V), gathered over the ranks (for evaluation and tests; training never gathers them).</summary>
    public override Tensor forward(Tensor inputIds)
    {
        using var scope = NewDisposeScope();
        var local = LocalLogits(inputIds);
        var layout = vocabulary with { Dim = (int)local.dim() - 1 };
        return layout.Gather(local, group).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The vocabulary-parallel lookup: each rank looks up the ids in its rows (zeros for the others) and the sum over the
    /// ranks is every token's embedding (all-reduce forward; backward reaches each rank's rows only).
    /// </summary>
    public Tensor Embed(Tensor inputIds)
    {
        using var scope = NewDisposeScope();
        var (start, length) = VocabularyRange;
        var outside = VocabParallel.Outside(inputIds, start, length);
        var local = inner.EmbedTokens((inputIds - start).masked_fill(outside, 0))            // (B, T, C)
            .masked_fill(outside.unsqueeze(-1), 0);
        return TensorParallelMappings.ReduceFromRegion(local, group).MoveToOuterDisposeScope();
    }

    /// <summary>Mean cross-entropy of this rank's logits slice against the targets: <see cref="VocabParallel.CrossEntropy"/>.</summary>
    public Tensor VocabParallelCrossEntropy(Tensor localLogits, Tensor target)
    {
        var (start, length) = VocabularyRange;
        return VocabParallel.CrossEntropy(localLogits, target, start, length, group);
    }

    /// <summary>
    /// Collective (every rank of the group): assembles the one-process state dict, so that <see cref="state_dict"/> reads
    /// and writes whole tensors under the Hugging Face names until the result is disposed; disposing it puts the whole
    /// tensors' slices back into this rank's shards (what a checkpoint load wrote) and frees them.
    /// </summary>
    public IDisposable WholeState()
    {
        if (whole is not null) throw new InvalidOperationException("tensor parallel: WholeState() is already open");
        using var _ = no_grad();
        var assembled = new Dictionary<string, Tensor>();
        foreach (var (name, t) in base.state_dict())
            assembled[name] = layouts.TryGetValue(name, out var layout) ? layout.Gather(t, group) : t;
        whole = assembled;
        return new WholeStateScope(this);
    }

    /// <summary>The one-process state dict while <see cref="WholeState"/> is open; outside it this rank holds only shards, which are never saved as a model.</summary>
    public override Dictionary<string, Tensor> state_dict(Dictionary<string, Tensor>? destination = null, string? prefix = null)
    {
        var state = whole ?? throw new InvalidOperationException("tensor parallel: the model's state dict is whole only inside WholeState(), which every rank must enter");
        destination ??= [];
        foreach (var (name, t) in state) destination[(prefix ?? "") + name] = t;
        return destination;
    }

    private void CloseWholeState()
    {
        var state = whole!;
        whole = null;
        using var _ = no_grad();
        foreach (var (name, shard) in base.state_dict())
        {
            if (!layouts.TryGetValue(name, out var layout)) continue; // whole tensors were the parameters themselves
            using (var slice = layout.Slice(state[name], group.Rank, group.Size)) shard.copy_(slice);
            state[name].Dispose();
        }
    }

    private sealed class WholeStateScope(TensorParallelCausalLM model) : IDisposable
    {
        private bool closed;

        public void Dispose()
        {
            if (closed) return;
            closed = true;
            model.CloseWholeState();
        }
    }
}

/// <summary>The vocabulary-parallel computations, on any rank's slice [start, start + length) of the vocabulary.</summary>
public static class VocabParallel
{
    /// <summary>True where an id is not in this rank's rows.</summary>
    public static Tensor Outside(Tensor ids, long start, long length) => ids.lt(start).logical_or(ids.ge(start + length));

    /// <summary>
    /// Mean cross-entropy of logits split by vocabulary over the ranks, without gathering them (Megatron's
    /// vocab_parallel_cross_entropy): the row maximum is all-reduced (max), then the sum of exponentials and the target's
    /// logit (held by one rank) are all-reduced (sum). Computed in fp32, as <see cref="LanguageModeling.Loss"/>.
    /// </summary>
    /// <param name="localLogits">(..., length): this rank's columns of the logits.</param>
    /// <param name="target">(...): token ids over the whole vocabulary.</param>
    public static Tensor CrossEntropy(Tensor localLogits, Tensor target, long start, long length, ICommunicator group)
    {
        using var scope = NewDisposeScope();
        var z = localLogits.reshape(-1, localLogits.shape[^1]).to(ScalarType.Float32);        // (N, V/tp)
        // The maximum only keeps exp() in range: it cancels in the loss, so it carries no gradient.
        var max = TensorParallelMappings.AllReduced(z.detach().amax([1]), group, ReduceOp.Max); // (N)
        var shifted = z - max.unsqueeze(1);
        var sumExp = TensorParallelMappings.ReduceFromRegion(shifted.exp().sum(1), group);    // (N)
        var t = target.reshape(-1);
        var outside = Outside(t, start, length);
        var picked = shifted.gather(1, (t - start).masked_fill(outside, 0).unsqueeze(1)).squeeze(1).masked_fill(outside, 0);
        var targetLogit = TensorParallelMappings.ReduceFromRegion(picked, group);             // (N)
        return (sumExp.log() - targetLogit).mean().MoveToOuterDisposeScope();
    }
}
