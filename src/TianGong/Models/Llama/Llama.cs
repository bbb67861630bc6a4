using TianGong.Models.Layers;
using TorchSharp.Modules;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Models.Llama;

// Llama as in Hugging Face's modeling_llama.py: RMSNorm → rotary → SwiGLU MLP → grouped-query attention
// → decoder layer → model → LM head. Keys: model.{embed_tokens,norm}, model.layers.{i}.{input_layernorm,
// self_attn.{q,k,v,o}_proj, post_attention_layernorm, mlp.{gate,up,down}_proj}, lm_head (untied only).

public sealed class LlamaMLP : nn.Module<Tensor, Tensor>
{
    private readonly Linear gate_proj, up_proj, down_proj;

    public LlamaMLP(LlamaConfig config) : base(nameof(LlamaMLP))
    {
        gate_proj = nn.Linear(config.HiddenSize, config.IntermediateSize, hasBias: config.MlpBias);
        up_proj = nn.Linear(config.HiddenSize, config.IntermediateSize, hasBias: config.MlpBias);
        down_proj = nn.Linear(config.IntermediateSize, config.HiddenSize, hasBias: config.MlpBias);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return down_proj.forward(F.silu(gate_proj.forward(x)) * up_proj.forward(x)).MoveToOuterDisposeScope();
    }
}

public sealed class LlamaAttention : nn.Module<Tensor, RotaryEmbedding, KvCache?, Tensor>
{
    private readonly Linear q_proj, k_proj, v_proj, o_proj;
    private readonly int heads, kvHeads, headDim, layerIdx;
    private readonly double attnDropout;

    public LlamaAttention(LlamaConfig config, int layerIdx) : base(nameof(LlamaAttention))
    {
        heads = config.NumAttentionHeads;
        kvHeads = config.KeyValueHeads;
        headDim = config.HeadSize;
        q_proj = nn.Linear(config.HiddenSize, heads * headDim, hasBias: config.AttentionBias);
        k_proj = nn.Linear(config.HiddenSize, kvHeads * headDim, hasBias: config.AttentionBias);
        v_proj = nn.Linear(config.HiddenSize, kvHeads * headDim, hasBias: config.AttentionBias);
        o_proj = nn.Linear(heads * headDim, config.HiddenSize, hasBias: config.AttentionBias);
        attnDropout = config.AttentionDropout;
        this.layerIdx = layerIdx;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, RotaryEmbedding rope, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        var (b, t) = (x.shape[0], x.shape[1]);
        var q = q_proj.forward(x).view(b, t, heads, headDim).transpose(1, 2);               // (B, H, T, D)
        var k = k_proj.forward(x).view(b, t, kvHeads, headDim).transpose(1, 2);            // (B, Hkv, T, D)
        var v = v_proj.forward(x).view(b, t, kvHeads, headDim).transpose(1, 2);
        if (cache?.Positions is { } positions)                                              // (B or 1, T), set by the model's forward
        {
            q = rope.Apply(q, positions);
            k = rope.Apply(k, positions);
        }
        else
        {
            q = rope.Apply(q, 0);
            k = rope.Apply(k, 0);
        }
        if (cache is not null) (k, v) = cache.Append(layerIdx, k, v);
        k = Attention.RepeatKv(k, heads / kvHeads);
        v = Attention.RepeatKv(v, heads / kvHeads);
        var y = Attention.Causal(q, k, v, training ? attnDropout : 0.0, cache?.Mask);       // (B, H, T, D)
        y = y.transpose(1, 2).reshape(b, t, heads * headDim);
        return o_proj.forward(y).MoveToOuterDisposeScope();
    }
}

public sealed class LlamaDecoderLayer : nn.Module<Tensor, RotaryEmbedding, KvCache?, Tensor>
{
    private readonly LlamaAttention self_attn;
    private readonly LlamaMLP mlp;
    private readonly RMSNorm input_layernorm, post_attention_layernorm;

    public LlamaDecoderLayer(LlamaConfig config, int layerIdx) : base(nameof(LlamaDecoderLayer))
    {
        self_attn = new LlamaAttention(config, layerIdx);
        mlp = new LlamaMLP(config);
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

/// <summary>The transformer trunk: embeddings, layers, final norm. Returns hidden states (B, T, C).</summary>
public sealed class LlamaModel : nn.Module<Tensor, KvCache?, Tensor>
{
    private readonly Embedding embed_tokens;
    private readonly ModuleList<LlamaDecoderLayer> layers;
    private readonly RMSNorm norm;
    private readonly RotaryEmbedding rotary; // not a module: tables are derived from the config, never saved

    public LlamaModel(LlamaConfig config) : base(nameof(LlamaModel))
    {
        embed_tokens = nn.Embedding(config.VocabSize, config.HiddenSize);
        layers = new ModuleList<LlamaDecoderLayer>(Enumerable.Range(0, config.NumHiddenLayers).Select(i => new LlamaDecoderLayer(config, i)).ToArray());
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
        cache?.NextPositions(t, inputIds.device);                                            // each layer rotates by cache.Positions
        var x = embed_tokens.forward(inputIds);                                              // (B, T, C)
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

public sealed class LlamaForCausalLM : CausalLM
{
    private readonly LlamaModel model;
    private readonly Linear? lm_head; // absent when tied: logits use model.embed_tokens.weight
    private readonly LlamaConfig config;

    public LlamaForCausalLM(LlamaConfig config) : base(nameof(LlamaForCausalLM))
    {
        config.Validate();
        this.config = config;
        model = new LlamaModel(config);
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
        new(config.NumHiddenLayers, batch, config.KeyValueHeads, Math.Min(maxLength, RotaryEmbedding.PositionLimit(config.Rope, config.MaxPositionEmbeddings)), config.HeadSize, ModelDType, ModelDevice);

    /// <summary>N(0, initializer_range) for every matrix, ones for norms, zeros for biases: HF's LlamaPreTrainedModel._init_weights.</summary>
    public override void InitializeWeights()
    {
        using var _ = no_grad();
        foreach (var (name, p) in named_parameters())
        {
            if (name.EndsWith(".bias")) p.zero_();
            else if (name.EndsWith("norm.weight")) p.fill_(1.0);
            else p.normal_(0, config.InitializerRange);
        }
    }
}
