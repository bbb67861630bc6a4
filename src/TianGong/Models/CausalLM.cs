using TianGong.Models.Layers;
using TorchSharp.Modules;

namespace TianGong.Models;

/// <summary>
/// A decoder-only language model. Each family (Gpt2, Llama, ...) is one file below this folder; this base is only
/// the contract that trainers, generators and adapters rely on, so they never ask which family they hold.
/// </summary>
public abstract class CausalLM : nn.Module<Tensor, Tensor>
{
    protected CausalLM(string name) : base(name) { }

    public abstract ICausalLMConfig Config { get; }

    /// <summary>The family's trunk: embeddings, layers, final norm (and an auxiliary loss, for families that have one).</summary>
    protected internal abstract TrunkOutput Trunk(DecoderInput input);

    /// <summary>The family's LM head: hidden states (B, T, C) → logits (B, T, V), tied to the token embedding or not.</summary>
    protected internal abstract Tensor LmHead(Tensor hidden);

    /// <summary>
    /// The full forward call (ids or embeddings, padding mask, positions, cache, hidden states). With a cache, the
    /// new tokens continue the cached sequence and the cache grows by T.
    /// </summary>
    public DecoderOutput Forward(DecoderInput input)
    {
        using var scope = NewDisposeScope();
        var trunk = Trunk(input);                                                            // (B, T, C)
        var logits = LmHead(trunk.LastHiddenState);                                         // (B, T, V)
        foreach (var h in trunk.HiddenStates ?? []) h.MoveToOuterDisposeScope();
        return new DecoderOutput(logits.MoveToOuterDisposeScope(), trunk.HiddenStates, trunk.AuxLoss?.MoveToOuterDisposeScope());
    }

    /// <summary>The last hidden states (B, T, C), after the final norm and before the LM head: the basis of embeddings.</summary>
    public Tensor Hidden(DecoderInput input)
    {
        using var scope = NewDisposeScope();
        return Trunk(input).LastHiddenState.MoveToOuterDisposeScope();
    }

    /// <summary>The token embeddings (B, T, C) of ids: what <see cref="DecoderInput.InputsEmbeds"/> replaces.</summary>
    public abstract Tensor EmbedTokens(Tensor inputIds);

    /// <summary>Logits (B, T, V) for ids continuing the cache (if any).</summary>
    public Tensor forward(Tensor inputIds, KvCache? cache) => Forward(DecoderInput.Ids(inputIds, cache)).Logits;

    public override Tensor forward(Tensor inputIds) => forward(inputIds, null);

    public Tensor Hidden(Tensor inputIds) => Hidden(DecoderInput.Ids(inputIds));

    /// <summary>A cache for <paramref name="batch"/> sequences of up to <paramref name="maxLength"/> tokens, on the model's device and dtype.</summary>
    public abstract KvCache CreateCache(long batch, int maxLength);

    /// <summary>
    /// Draws fresh weights (pretraining from scratch) from <paramref name="generator"/>, or from torch's global generator
    /// (seed it first). Each family sets every one of its parameters here, so a model drawn from its own generator is the
    /// same whatever other threads draw from the global one meanwhile.
    /// </summary>
    public abstract void InitializeWeights(torch.Generator? generator = null);

    public long ParameterCount() => parameters().Sum(p => p.numel());

    /// <summary>Where the weights live: inputs (token ids, masks) are created there.</summary>
    public Device ModelDevice => parameters().First().device;
    protected ScalarType ModelDType => parameters().First().dtype;

    // The trunk taken apart, for pipeline stages and recomputation (Parallel/Pipeline/PipelineStage.cs): token (and
    // position) embeddings → decoder layer i under the call's AttentionContext → final norm, then LmHead. Each family
    // maps these onto its own modules in a few lines; none of them asks which stage it is in. A model that wraps
    // another (prompt tuning) keeps the defaults, which refuse.

    private TianGongException NoStages() =>
        new($"{GetType().Name}: this model cannot be split into pipeline stages or recomputed layer by layer (use pp=1, recompute=none)");

    /// <summary>Embeddings (B, T, C) of token ids (B, T) at the context's positions, as the trunk computes them before layer 0.</summary>
    protected internal virtual Tensor EmbedStage(Tensor inputIds, AttentionContext context) => throw NoStages();

    /// <summary>
    /// What the trunk adds to token embeddings (B, T, C) before layer 0, for a caller that looked the tokens up itself (a
    /// vocabulary-parallel embedding): nothing by default (Llama, Mistral, Qwen2); GPT-2 adds learned positions and dropout.
    /// </summary>
    protected internal virtual Tensor PositionStage(Tensor tokenEmbeddings, AttentionContext context) => tokenEmbeddings;

    /// <summary>Decoder layer <paramref name="index"/> on hidden states (B, T, C).</summary>
    protected internal virtual Tensor LayerStage(int index, Tensor hidden, AttentionContext context) => throw NoStages();

    /// <summary>The final norm the trunk applies after the last layer.</summary>
    protected internal virtual Tensor NormStage(Tensor hidden) => throw NoStages();

    /// <summary>Parameters <see cref="EmbedStage"/> uses.</summary>
    protected internal virtual IEnumerable<Parameter> EmbeddingParameters() => throw NoStages();

    /// <summary>Parameters of decoder layer <paramref name="index"/>.</summary>
    protected internal virtual IEnumerable<Parameter> LayerParameters(int index) => throw NoStages();

    /// <summary>Parameters of the final norm and <see cref="LmHead"/>: a tied head lists the token embedding here too.</summary>
    protected internal virtual IEnumerable<Parameter> HeadParameters() => throw NoStages();
}
