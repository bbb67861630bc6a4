using TianGong.Models;
using TorchSharp.Modules;

namespace TianGong.Parallelism.Pipeline;

/// <summary>
/// The model as one pipeline rank holds it (pp &gt; 1): the whole model's modules and Hugging Face state-dict keys, but
/// in memory only the parameters of its own stage (its layers, plus the embeddings on the first stage and the final
/// norm and head on the last, a tied embedding on both). Every rank builds the model whole from the same seed, so the
/// initial weights are exactly one process's, and the other stages' tensors are freed right after (each becomes an
/// empty tensor of the same dtype; the module tree and names stay). Megatron never builds them at all; building then
/// freeing keeps initialisation and checkpoint loading identical to one process at the price of one whole model at start.
/// </summary>
/// <remarks>
/// A checkpoint reads and writes the whole state dict, so inside <see cref="WholeState"/> (entered by every rank, as the
/// tensor-parallel model's) the freed tensors exist again, allocated only when needed: on the rank that saves when
/// <see cref="PipelineParallel.GatherModel"/> receives them, and on every rank when a checkpoint is loaded into
/// <see cref="state_dict"/>. Closing the scope frees them again.
/// </remarks>
public sealed class PipelineStageModel : nn.Module
{
    private readonly List<(Parameter Param, long[] Shape)> released = [];
    private readonly nn.Module? checkpointed;
    private bool whole, materialised;

    /// <param name="lm">The whole model, already identical on every rank (built from one seed or loaded, then synchronised).</param>
    /// <param name="kept">This stage's parameters (<see cref="PipelineStage.ParametersOf"/>): the only ones left in memory.</param>
    /// <param name="checkpointed">
    /// The module whose state dict a checkpoint holds, when not <paramref name="lm"/>'s own: the tensor-parallel model,
    /// whose state dict is the gathered one-process one inside its own WholeState.
    /// </param>
    public PipelineStageModel(CausalLM lm, IReadOnlyList<Parameter> kept, nn.Module? checkpointed = null) : base(nameof(PipelineStageModel))
    {
        Model = lm;
        this.checkpointed = checkpointed;
        // The model's children become this module's, so names stay model.layers.0... (as TensorParallelCausalLM does).
        foreach (var (name, child) in lm.named_children()) register_module(name, child);
        var keep = kept.ToHashSet(ReferenceEqualityComparer.Instance);
        foreach (var p in lm.parameters())
            if (!keep.Contains(p)) released.Add((p, p.shape));
        WholeBytes = lm.parameters().Sum(p => p.numel() * p.element_size());
        Release();
    }

    public CausalLM Model { get; }

    /// <summary>Bytes of parameters this rank holds now (the other stages' are freed outside <see cref="WholeState"/>).</summary>
    public long ParameterBytes => parameters().Sum(p => p.numel() * p.element_size());

    /// <summary>Bytes of the whole model's parameters, as one process holds them.</summary>
    public long WholeBytes { get; }

    /// <summary>
    /// Collective in effect (every rank enters it around a checkpoint save or load, as the trainer does): until disposed,
    /// <see cref="state_dict"/> is the whole model's, the other stages' tensors allocated on first use; disposing frees them again.
    /// </summary>
    public IDisposable WholeState()
    {
        if (whole) throw new InvalidOperationException("pipeline stage: WholeState() is already open");
        whole = true;
        return new WholeStateScope(this);
    }

    /// <summary>The whole model's state dict, only inside <see cref="WholeState"/>: outside it this rank holds one stage, which is never saved as a model.</summary>
    public override Dictionary<string, Tensor> state_dict(Dictionary<string, Tensor>? destination = null, string? prefix = null)
    {
        if (!whole) throw new InvalidOperationException("pipeline stage: the model's state dict is whole only inside WholeState(), which every rank must enter");
        Materialise();
        return checkpointed?.state_dict(destination, prefix) ?? base.state_dict(destination, prefix);
    }

    /// <summary>Gives the other stages' parameters their shapes again (zeros until a gather or a load fills them).</summary>
    public void Materialise()
    {
        if (materialised) return;
        using var _ = no_grad();
        foreach (var (p, shape) in released)
        {
            using var storage = zeros(shape, p.dtype, p.device);
            SetStorage(p, storage);
        }
        materialised = true;
    }

    /// <summary>Frees the other stages' parameters: each keeps its dtype, device and place in the module tree, with no elements.</summary>
    private void Release()
    {
        using var _ = no_grad();
        foreach (var (p, _) in released)
        {
            using var none = empty(new long[] { 0 }, p.dtype, p.device);
            SetStorage(p, none);
        }
        materialised = false;
    }

    /// <summary>p.set_(source): p takes source's storage and shape (the old storage is freed when nothing else holds it).</summary>
    private static void SetStorage(Parameter p, Tensor source)
    {
        var result = p.set_(source);
        if (!ReferenceEquals(result, p)) result.Dispose(); // a second handle to p (TorchSharp versions differ), never p itself
    }

    private sealed class WholeStateScope(PipelineStageModel model) : IDisposable
    {
        private bool closed;

        public void Dispose()
        {
            if (closed) return;
            closed = true;
            model.whole = false;
            if (model.materialised) model.Release();
        }
    }
}
