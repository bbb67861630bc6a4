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
    private readonly nn.Module<Tensor, Tensor> gate_proj, up_proj, down_proj;

    public MistralMLP(MistralConfig config) : base(nameof(MistralMLP))
    {
        gate_proj = Projections.Linear(config.HiddenSize, config.IntermediateSize, bias: false);
        up_proj = Projections.Linear(config.HiddenSize, config.IntermediateSize, bias: false);
        down_proj = Projections.Linear(config.IntermediateSize, config.HiddenSize, bias: false);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return down_proj.forward(DecodeActivations.SiluTimes(gate_proj.forward(x), up_proj.forward(x), training)).MoveToOuterDisposeScope();
    }
}

// As Llama.LlamaAttention, without bias, and each query sees only the sliding_window newest positions (itself included).
public sealed class MistralAttention : nn.Module<Tensor, RotaryEmbedding, AttentionContext, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> q_proj, k_proj, v_proj, o_proj;
    private readonly int heads, kvHeads, headDim, layerIdx;
    private readonly int? slidingWindow;
    private readonly double attnDropout;

    public MistralAttention(MistralConfig config, int layerIdx) : base(nameof(MistralAttention))
    {
        heads = config.NumAttentionHeads;
        kvHeads = config.KeyValueHeads;
        headDim = config.HeadSize;
        q_proj = Projections.Linear(config.HiddenSize, heads * headDim, bias: false);
        k_proj = Projections.Linear(config.HiddenSize, kvHeads * headDim, bias: false);
        v_proj = Projections.Linear(config.HiddenSize, kvHeads * headDim, bias: false);
        o_proj = Projections.Linear(heads * headDim, config.HiddenSize, bias: false);
        attnDropout = config.AttentionDropout;
        slidingWindow = config.SlidingWindow;
        this.layerIdx = layerIdx;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, RotaryEmbedding rope, AttentionContext context)
    {
        using var scope = NewDisposeScope();
        var (b, t) = (x.shape[0], x.shape[1]);
        // -1: heads come from the projection's width, so a tensor-parallel shard runs its own heads unchanged
        var q = q_proj.forward(x).view(b, t, -1, headDim).transpose(1, 2);                   // (B, H, T, D)
        var k = k_proj.forward(x).view(b, t, -1, headDim).transpose(1, 2);            // (B, Hkv, T, D)
        var v = v_proj.forward(x).view(b, t, -1, headDim).transpose(1, 2);
        q = rope.Apply(q, context);
        k = rope.Apply(k, context);
        // The cache keeps every position; the mask, not eviction, drops those outside the window.
        var y = context.Attend(layerIdx, q, k, v, heads / kvHeads, slidingWindow, training ? attnDropout : 0.0); // (B, H, T, D)
        y = y.transpose(1, 2).reshape(b, t, -1);
        return o_proj.forward(y).MoveToOuterDisposeScope();
    }
}

// As Llama.LlamaDecoderLayer.
public sealed class MistralDecoderLayer : nn.Module<Tensor, RotaryEmbedding, AttentionContext, Tensor>
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

    public override Tensor forward(Tensor x, RotaryEmbedding rope, AttentionContext context)
    {
        using var scope = NewDisposeScope();
        var h = x + self_attn.forward(input_layernorm.forward(x), rope, context);
        return (h + mlp.forward(post_attention_layernorm.forward(h))).MoveToOuterDisposeScope();
    }
}

/// <summary>The transformer trunk: embeddings, layers, final norm. Returns hidden states (B, T, C). As Llama.LlamaModel.</summary>
public sealed class MistralModel : nn.Module<DecoderInput, TrunkOutput>
{
    private readonly EmbeddingTable embed_tokens;
    private readonly ModuleList<MistralDecoderLayer> layers;
    private readonly RMSNorm norm;
    private readonly RotaryEmbedding rotary; // not a module: tables are derived from the config, never saved

    public MistralModel(MistralConfig config) : base(nameof(MistralModel))
    {
        embed_tokens = new EmbeddingTable(config.VocabSize, config.HiddenSize);
        layers = new ModuleList<MistralDecoderLayer>(Enumerable.Range(0, config.NumHiddenLayers).Select(i => new MistralDecoderLayer(config, i)).ToArray());
        norm = new RMSNorm(config.HiddenSize, config.RmsNormEps);
        rotary = new RotaryEmbedding(config.HeadSize, config.MaxPositionEmbeddings, config.Rope);
        RegisterComponents();
    }

    internal Parameter TokenEmbedding => embed_tokens.weight!;

    internal Tensor EmbedTokens(Tensor inputIds) => embed_tokens.forward(inputIds);

    public override TrunkOutput forward(DecoderInput input)
    {
        using var scope = NewDisposeScope();
        var (b, t) = input.Shape();
        int start = input.Cache?.Length ?? 0;
        if (start + t > rotary.MaxPositions)
            throw new TianGongException($"sequence of {start + t} tokens exceeds max_position_embeddings ({rotary.MaxPositions})");
        var x = input.InputsEmbeds ?? embed_tokens.forward(input.InputIds!);                 // (B, T, C)
        using var context = AttentionContext.Create(b, t, x.device, input.AttentionMask, input.PositionIds, input.Cache);
        var hidden = input.OutputHiddenStates ? new List<Tensor>() : null;
        foreach (var layer in layers)
        {
            hidden?.Add(x);
            x = layer.forward(x, rotary, context);
        }
        context.Commit();
        x = norm.forward(x);
        hidden?.Add(x);
        return new TrunkOutput(x, hidden).MoveToOuterDisposeScope();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) rotary.Dispose();
        base.Dispose(disposing);
    }
    // The parts of forward, for pipeline stages (CausalLM's stage API).
    internal Tensor EmbedStage(Tensor inputIds) => embed_tokens.forward(inputIds);
    internal Tensor LayerStage(int index, Tensor hidden, AttentionContext context) => layers[index].forward(hidden, rotary, context);
    internal RMSNorm FinalNorm => norm;
    internal IEnumerable<Parameter> EmbeddingParameters() => embed_tokens.parameters();
    internal IEnumerable<Parameter> LayerParameters(int index) => layers[index].parameters();
}

/// <summary>As Llama.LlamaForCausalLM.</summary>
public sealed class MistralForCausalLM : CausalLM
{
    private readonly MistralModel model;
    private readonly nn.Module<Tensor, Tensor>? lm_head; // absent when tied: logits use model.embed_tokens.weight
    private readonly MistralConfig config;

    public MistralForCausalLM(MistralConfig config) : base(nameof(MistralForCausalLM))
    {
        config.Validate();
        this.config = config;
        model = new MistralModel(config);
        if (!config.TieWordEmbeddings) lm_head = Projections.Linear(config.HiddenSize, config.VocabSize, bias: false);
        RegisterComponents();
    }

    public override ICausalLMConfig Config => config;

    public override Tensor EmbedTokens(Tensor inputIds) => model.EmbedTokens(inputIds);

    protected internal override TrunkOutput Trunk(DecoderInput input) => model.forward(input);

    protected internal override Tensor LmHead(Tensor hidden) => lm_head is null ? TiedHead.Logits(hidden, model.TokenEmbedding, training) : lm_head.forward(hidden);

    public override KvCache CreateCache(long batch, int maxLength) =>
        new(config.NumHiddenLayers, batch, config.KeyValueHeads, Math.Min(maxLength, RotaryEmbedding.PositionLimit(config.Rope, config.MaxPositionEmbeddings)), config.HeadSize, ModelDType, ModelDevice);

    /// <summary>N(0, initializer_range) for every matrix, ones for norms: HF's MistralPreTrainedModel._init_weights.</summary>
    public override void InitializeWeights(torch.Generator? generator = null)
    {
        using var _ = no_grad();
        foreach (var (name, p) in named_parameters())
        {
            if (name.EndsWith("norm.weight")) p.fill_(1.0);
            else p.normal_(0, config.InitializerRange, generator);
        }
    }

    protected internal override Tensor EmbedStage(Tensor inputIds, AttentionContext context) => model.EmbedStage(inputIds);
    protected internal override Tensor LayerStage(int index, Tensor hidden, AttentionContext context) => model.LayerStage(index, hidden, context);
    protected internal override Tensor NormStage(Tensor hidden) => model.FinalNorm.forward(hidden);
    protected internal override IEnumerable<Parameter> EmbeddingParameters() => model.EmbeddingParameters();
    protected internal override IEnumerable<Parameter> LayerParameters(int index) => model.LayerParameters(index);
    protected internal override IEnumerable<Parameter> HeadParameters() =>
        model.FinalNorm.parameters().Concat(lm_head?.parameters() ?? model.EmbeddingParameters()); // tied: the token embedding
}
