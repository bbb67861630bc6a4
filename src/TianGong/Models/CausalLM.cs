using TianGong.Models.Layers;

namespace TianGong.Models;

/// <summary>
/// A decoder-only language model. Each family (Gpt2, Llama, ...) is one file below this folder; this base is only
/// the contract that trainers, generators and adapters rely on, so they never ask which family they hold.
/// </summary>
public abstract class CausalLM : nn.Module<Tensor, Tensor>
{
    protected CausalLM(string name) : base(name) { }

    public abstract ICausalLMConfig Config { get; }

    /// <summary>
    /// The full forward call (ids or embeddings, padding mask, positions, cache, hidden states). With a cache, the
    /// new tokens continue the cached sequence and the cache grows by T.
    /// </summary>
    public abstract DecoderOutput Forward(DecoderInput input);

    /// <summary>The last hidden states (B, T, C), after the final norm and before the LM head: the basis of embeddings.</summary>
    public abstract Tensor Hidden(DecoderInput input);

    /// <summary>The token embeddings (B, T, C) of ids: what <see cref="DecoderInput.InputsEmbeds"/> replaces.</summary>
    public abstract Tensor EmbedTokens(Tensor inputIds);

    /// <summary>Logits (B, T, V) for ids continuing the cache (if any).</summary>
    public Tensor forward(Tensor inputIds, KvCache? cache) => Forward(DecoderInput.Ids(inputIds, cache)).Logits;

    public override Tensor forward(Tensor inputIds) => forward(inputIds, null);

    public Tensor Hidden(Tensor inputIds) => Hidden(DecoderInput.Ids(inputIds));

    /// <summary>A cache for <paramref name="batch"/> sequences of up to <paramref name="maxLength"/> tokens, on the model's device and dtype.</summary>
    public abstract KvCache CreateCache(long batch, int maxLength);

    /// <summary>Draws fresh weights (pretraining from scratch), from torch's global generator: seed it first.</summary>
    public abstract void InitializeWeights();

    public long ParameterCount() => parameters().Sum(p => p.numel());

    protected Device ModelDevice => parameters().First().device;
    protected ScalarType ModelDType => parameters().First().dtype;
}
