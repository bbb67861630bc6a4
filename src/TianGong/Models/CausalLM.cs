using TianGong.Models.Layers;

namespace TianGong.Models;

/// <summary>
/// A decoder-only language model: token ids (B, T) in, next-token logits (B, T, vocab) out.
/// Each family (Gpt2, Llama) is one file below this folder; this base is only the contract that
/// trainers and generators rely on, so they never ask which family they hold.
/// </summary>
public abstract class CausalLM : nn.Module<Tensor, Tensor>
{
    protected CausalLM(string name) : base(name) { }

    public abstract ICausalLMConfig Config { get; }

    /// <summary>
    /// Logits for every position. With a cache, the ids continue the cached sequence (positions start at
    /// cache.Length, or at each row's own length in a per-row cache) and the cache grows by T.
    /// </summary>
    public abstract Tensor forward(Tensor inputIds, KvCache? cache);

    public override Tensor forward(Tensor inputIds) => forward(inputIds, null);

    /// <summary>The last hidden states (B, T, C), after the final norm and before the LM head: the basis of embeddings.</summary>
    public abstract Tensor Hidden(Tensor inputIds);

    /// <summary>A cache for <paramref name="batch"/> sequences of up to <paramref name="maxLength"/> tokens, on the model's device and dtype.</summary>
    public abstract KvCache CreateCache(long batch, int maxLength);

    /// <summary>Draws fresh weights (pretraining from scratch), from torch's global generator: seed it first.</summary>
    public abstract void InitializeWeights();

    public long ParameterCount() => parameters().Sum(p => p.numel());

    protected Device ModelDevice => parameters().First().device;
    protected ScalarType ModelDType => parameters().First().dtype;
}
