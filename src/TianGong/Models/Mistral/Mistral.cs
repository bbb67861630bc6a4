using TianGong.Models.Layers;
using TorchSharp.Modules;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Models.Mistral;

// Mistral as in Hugging Face's modeling_mistral.py: Llama's blocks (copied from Llama.cs, without the bias options
// Mistral has no config for) with sliding-window attention. Keys: model.{embed_tokens,norm}, model.layers.{i}.
// {input_layernorm, self_attn.{q,k,v,o}_proj, post_attention_layernorm, mlp.{gate,up,down}_proj}, lm_head (untied only).

// As Llama.LlamaMLP, without bias.
public sealed class MistralMLP : nn.Module<Tensor, Tensor>
{
    private readonly Linear gate_proj, up_proj, down_proj;

    public MistralMLP(MistralConfig config) : base(nameof(MistralMLP))
    {
        gate_proj = nn.Linear(config.HiddenSize, config.IntermediateSize, hasBias: false);
        up_proj = nn.Linear(config.HiddenSize, config.IntermediateSize, hasBias: false);
        down_proj = nn.Linear(config.IntermediateSize, config.HiddenSize, hasBias: false);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return down_proj.forward(F.silu(gate_proj.forward(x)) * up_proj.forward(x)).MoveToOuterDisposeScope();
    }
}

// As Llama.LlamaAttention, without bias, and each query sees only the sliding_window newest positions (itself included).
public sealed class MistralAttention : nn.Module<Tensor, RotaryEmbedding, KvCache?, Tensor>
{
    private readonly Linear q_proj, k_proj, v_proj, o_proj;
    private readonly int heads, kvHeads, headDim, layerIdx;
    private readonly int? slidingWindow;
    private readonly double attnDropout;

    public MistralAttention(MistralConfig config, int layerIdx) : base(nameof(MistralAttention))
    {
        heads = config.NumAttentionHeads;
        kvHeads = config.KeyValueHeads;
        headDim = config.HeadSize;
        q_proj = nn.Linear(config.HiddenSize, heads * headDim, hasBias: false);
        k_proj = nn.Linear(config.HiddenSize, kvHeads * headDim, hasBias: false);
        v_proj = nn.Linear(config.HiddenSize, kvHeads * headDim, hasBias: false);
        o_proj = nn.Linear(heads * headDim, config.HiddenSize, hasBias: false);
        attnDropout = config.AttentionDropout;
        slidingWindow = config.SlidingWindow;
        this.layerIdx = layerIdx;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, RotaryEmbedding rope, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        var (b, t) = (x.shape[0], x.shape[1]);
        int start = cache?.Length ?? 0;
        var q = q_proj.forward(x).view(b, t, heads, headDim).transpose(1, 2);               // (B, H, T, D)
        var k = k_proj.forward(x).view(b, t, kvHeads, headDim).transpose(1, 2);            // (B, Hkv, T, D)
        var v = v_proj.forward(x).view(b, t, kvHeads, headDim).transpose(1, 2);
        // A per-row (serving) cache gives each row its own positions and mask; otherwise positions continue from the cache length.
        var rowMask = cache?.Mask;
        q = rowMask is null ? rope.Apply(q, start) : rope.Apply(q, cache!.Positions!);
        k = rowMask is null ? rope.Apply(k, start) : rope.Apply(k, cache!.Positions!);
        // The cache keeps every position; the mask, not eviction, drops those outside the window.
        if (cache is not null) (k, v) = cache.Append(layerIdx, k, v);
        k = Attention.RepeatKv(k, heads / kvHeads);
        v = Attention.RepeatKv(v, heads / kvHeads);
        double dropout = training ? attnDropout : 0.0;
        var y = rowMask is not null
            ? Attention.Causal(q, k, v, dropout, slidingWindow is { } w ? rowMask.logical_and(Attention.WindowMask(cache!.Positions!, k.shape[2], w)) : rowMask)
            : slidingWindow is { } window
                ? Attention.SlidingWindow(q, k, v, window, dropout)
                : Attention.Causal(q, k, v, dropout);                                        // (B, H, T, D)
        y = y.transpose(1, 2).reshape(b, t, heads * headDim);
        return o_proj.forward(y).MoveToOuterDisposeScope();
    }
}

// As Llama.LlamaDecoderLayer.
public sealed class MistralDecoderLayer : nn.Module<Tensor, RotaryEmbedding, KvCache?, Tensor>
{
    private readonly MistralAttention self_attn;
    private readonly MistralMLP mlp;
    private readonly RMSNorm input_layernorm, post_attention_layernorm;

    public MistralDecoderLayer(MistralConfig config, int layerIdx) : base(nameof(MistralDecoderLayer))
    {
        self_attn = new MistralAttention(config, layerIdx);
        mlp = new MistralMLP(config);
        input_layernorm = new RMSNorm(config.HiddenSize, config.RmsNormEps);
        post_attention_layernorm = new RMSNorm(config.HiddenSize, config.RmsNormEps);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, RotaryEmbedding rope, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        var h = x + self_attn.forward(input_layernorm.forward(x), rope, cache);
        return (h + mlp.forward(post_attention_layernorm.forward(h))).MoveToOuterDisposeScope();
    }
}

/// <summary>The transformer trunk: embeddings, layers, final norm. Returns hidden states (B, T, C). As Llama.LlamaModel.</summary>
public sealed class MistralModel : nn.Module<Tensor, KvCache?, Tensor>
{
    private readonly Embedding embed_tokens;
    private readonly ModuleList<MistralDecoderLayer> layers;
    private readonly RMSNorm norm;
    private readonly RotaryEmbedding rotary; // not a module: tables are derived from the config, never saved

    public MistralModel(MistralConfig config) : base(nameof(MistralModel))
    {
        embed_tokens = nn.Embedding(config.VocabSize, config.HiddenSize);
        layers = new ModuleList<MistralDecoderLayer>(Enumerable.Range(0, config.NumHiddenLayers).Select(i => new MistralDecoderLayer(config, i)).ToArray());
        norm = new RMSNorm(config.HiddenSize, config.RmsNormEps);
        rotary = new RotaryEmbedding(config.HeadSize, config.MaxPositionEmbeddings, config.Rope);
        RegisterComponents();
    }

    internal Parameter TokenEmbedding => embed_tokens.weight!;

    public override Tensor forward(Tensor inputIds, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        long t = inputIds.shape[1];
        int start = cache?.Length ?? 0;
        if (start + t > rotary.MaxPositions)
            throw new TianGongException($"sequence of {start + t} tokens exceeds max_position_embeddings ({rotary.MaxPositions})");
        var x = embed_tokens.forward(inputIds);                                              // (B, T, C)
        cache?.NextPositions(t, inputIds.device);                                            // per-row caches: positions and mask for this call
        foreach (var layer in layers) x = layer.forward(x, rotary, cache);
        cache?.Advance((int)t);
        return norm.forward(x).MoveToOuterDisposeScope();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) rotary.Dispose();
        base.Dispose(disposing);
    }
}

/// <summary>As Llama.LlamaForCausalLM.</summary>
public sealed class MistralForCausalLM : CausalLM
{
    private readonly MistralModel model;
    private readonly Linear? lm_head; // absent when tied: logits use model.embed_tokens.weight
    private readonly MistralConfig config;

    public MistralForCausalLM(MistralConfig config) : base(nameof(MistralForCausalLM))
    {
        config.Validate();
        this.config = config;
        model = new MistralModel(config);
        if (!config.TieWordEmbeddings) lm_head = nn.Linear(config.HiddenSize, config.VocabSize, hasBias: false);
        RegisterComponents();
    }

    public override ICausalLMConfig Config => config;

    public override Tensor Hidden(Tensor inputIds) => model.forward(inputIds, null);

    public override Tensor forward(Tensor inputIds, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        var hidden = model.forward(inputIds, cache);                                         // (B, T, C)
        var logits = lm_head is null ? F.linear(hidden, model.TokenEmbedding) : lm_head.forward(hidden);
        return logits.MoveToOuterDisposeScope();                                             // (B, T, V)
    }

    public override KvCache CreateCache(long batch, int maxLength) =>
        new(config.NumHiddenLayers, batch, config.KeyValueHeads, Math.Min(maxLength, RotaryEmbedding.PositionLimit(config.Rope, config.MaxPositionEmbeddings)),
            config.HeadSize, ModelDType, ModelDevice);

    /// <summary>N(0, initializer_range) for every matrix, ones for norms: HF's MistralPreTrainedModel._init_weights.</summary>
    public override void InitializeWeights()
    {
        using var _ = no_grad();
        foreach (var (name, p) in named_parameters())
        {
            if (name.EndsWith("norm.weight")) p.fill_(1.0);
            else p.normal_(0, config.InitializerRange);
        }
    }
}
