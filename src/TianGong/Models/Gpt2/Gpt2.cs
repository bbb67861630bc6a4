using TianGong.Models.Layers;
using TorchSharp.Modules;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Models.Gpt2;

// GPT-2 as in Hugging Face's modeling_gpt2.py (and the PanGu-α layout): pre-LayerNorm blocks, GELU MLP,
// learned absolute positions, LM head tied to the token embedding by default.
// Keys: transformer.{wte,wpe,ln_f}, transformer.h.{i}.{ln_1,attn.c_attn,attn.c_proj,ln_2,mlp.c_fc,mlp.c_proj}, lm_head (untied only).

public sealed class Gpt2Attention : nn.Module<Tensor, AttentionContext, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> c_attn; // Conv1D (C, 3C): q, k, v side by side
    private readonly nn.Module<Tensor, Tensor> c_proj;
    private readonly Dropout resid_dropout;
    private readonly int headDim, layerIdx;
    private readonly double attnDropout;

    public Gpt2Attention(Gpt2Config config, int layerIdx) : base(nameof(Gpt2Attention))
    {
        c_attn = Projections.Conv1D(config.NEmbd, 3 * config.NEmbd);
        c_proj = Projections.Conv1D(config.NEmbd, config.NEmbd);
        resid_dropout = nn.Dropout(config.ResidPdrop);
        headDim = config.NEmbd / config.NHead;
        attnDropout = config.AttnPdrop;
        this.layerIdx = layerIdx;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, AttentionContext context)
    {
        using var scope = NewDisposeScope();
        var (b, t) = (x.shape[0], x.shape[1]);
        // Thirds and -1 heads: a tensor-parallel shard of c_attn holds its own heads' q, k, v side by side.
        // One view and one permute, then three selects: fewer libtorch calls than chunk + view + transpose per part.
        var qkv = c_attn.forward(x).view(b, t, 3, -1, headDim).permute(2, 0, 3, 1, 4);      // (3, B, H, T, D)
        var (q, k, v) = (qkv.select(0, 0), qkv.select(0, 1), qkv.select(0, 2));              // (B, H, T, D)
        var y = context.Attend(layerIdx, q, k, v, groups: 1, window: null, training ? attnDropout : 0.0); // (B, H, T, D)
        y = c_proj.forward(y.transpose(1, 2).contiguous().view(b, t, -1));
        return (training ? resid_dropout.forward(y) : y).MoveToOuterDisposeScope();
    }
}

public sealed class Gpt2MLP : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> c_fc;   // Conv1D
    private readonly nn.Module<Tensor, Tensor> c_proj; // Conv1D
    private readonly Dropout dropout;
    private readonly string activation;

    public Gpt2MLP(Gpt2Config config) : base(nameof(Gpt2MLP))
    {
        c_fc = Projections.Conv1D(config.NEmbd, config.InnerSize);
        c_proj = Projections.Conv1D(config.InnerSize, config.NEmbd);
        dropout = nn.Dropout(config.ResidPdrop);
        activation = config.ActivationFunction;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = c_fc.forward(x);
        h = activation switch
        {
            "gelu_new" or "gelu_pytorch_tanh" => DecodeActivations.GeluTanh(h, training),
            "gelu" => F.gelu(h),
            "relu" => F.relu(h),
            "silu" => F.silu(h),
            _ => throw new TianGongException($"activation_function: unsupported '{activation}'"),
        };
        h = c_proj.forward(h);
        return (training ? dropout.forward(h) : h).MoveToOuterDisposeScope(); // dropout is the identity in eval: skip the call
    }
}

public sealed class Gpt2Block : nn.Module<Tensor, AttentionContext, Tensor>
{
    private readonly DecodeLayerNorm ln_1;
    private readonly Gpt2Attention attn;
    private readonly DecodeLayerNorm ln_2;
    private readonly Gpt2MLP mlp;

    public Gpt2Block(Gpt2Config config, int layerIdx) : base(nameof(Gpt2Block))
    {
        ln_1 = new DecodeLayerNorm(config.NEmbd, config.LayerNormEpsilon);
        attn = new Gpt2Attention(config, layerIdx);
        ln_2 = new DecodeLayerNorm(config.NEmbd, config.LayerNormEpsilon);
        mlp = new Gpt2MLP(config);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, AttentionContext context)
    {
        using var scope = NewDisposeScope();
        var h = x + attn.forward(ln_1.forward(x), context);
        return (h + mlp.forward(ln_2.forward(h))).MoveToOuterDisposeScope();
    }
}

/// <summary>The transformer trunk: embeddings, blocks, final norm. Returns hidden states (B, T, C).</summary>
public sealed class Gpt2Model : nn.Module<DecoderInput, TrunkOutput>
{
    private readonly EmbeddingTable wte;
    private readonly EmbeddingTable wpe;
    private readonly Dropout drop;
    private readonly ModuleList<Gpt2Block> h;
    private readonly DecodeLayerNorm ln_f;
    private readonly int contextLength;

    public Gpt2Model(Gpt2Config config) : base(nameof(Gpt2Model))
    {
        wte = new EmbeddingTable(config.VocabSize, config.NEmbd);
        wpe = new EmbeddingTable(config.NPositions, config.NEmbd);
        drop = nn.Dropout(config.EmbdPdrop);
        h = new ModuleList<Gpt2Block>(Enumerable.Range(0, config.NLayer).Select(i => new Gpt2Block(config, i)).ToArray());
        ln_f = new DecodeLayerNorm(config.NEmbd, config.LayerNormEpsilon);
        contextLength = config.NPositions;
        RegisterComponents();
    }

    internal Parameter TokenEmbedding => wte.weight!;

    internal Tensor EmbedTokens(Tensor inputIds) => wte.forward(inputIds);

    public override TrunkOutput forward(DecoderInput input)
    {
        using var scope = NewDisposeScope();
        var (b, t) = input.Shape();
        int start = input.Cache?.Length ?? 0;
        if (start + t > contextLength)
            throw new TianGongException($"sequence of {start + t} tokens exceeds n_positions ({contextLength})");
        var tokens = input.InputsEmbeds ?? wte.forward(input.InputIds!);                     // (B, T, C)
        using var context = AttentionContext.Create(b, t, tokens.device, input.AttentionMask, input.PositionIds, input.Cache);
        var x = tokens + wpe.forward(context.Positions);                                     // positions (B or 1, T)
        if (training) x = drop.forward(x);
        var hidden = input.OutputHiddenStates ? new List<Tensor>() : null;
        foreach (var block in h)
        {
            hidden?.Add(x);
            x = block.forward(x, context);
        }
        context.Commit();
        x = ln_f.forward(x);
        hidden?.Add(x);
        return new TrunkOutput(x, hidden).MoveToOuterDisposeScope();
    }

    // The parts of forward, for pipeline stages (CausalLM's stage API).
    internal Tensor EmbedStage(Tensor inputIds, AttentionContext context) => PositionStage(wte.forward(inputIds), context);
    internal Tensor PositionStage(Tensor tokens, AttentionContext context) => drop.forward(tokens + wpe.forward(context.Positions));
    internal Gpt2Block Block(int index) => h[index];
    internal DecodeLayerNorm FinalNorm => ln_f;
    internal IEnumerable<Parameter> EmbeddingParameters() => wte.parameters().Concat(wpe.parameters());
    internal IEnumerable<Parameter> TokenEmbeddingParameters() => wte.parameters(); // the registered parameter (wte.weight returns another wrapper)
}

public sealed class Gpt2LMHeadModel : CausalLM
{
    private readonly Gpt2Model transformer;
    private readonly nn.Module<Tensor, Tensor>? lm_head; // absent when tied: logits use transformer.wte.weight
    private readonly Gpt2Config config;

    public Gpt2LMHeadModel(Gpt2Config config) : base(nameof(Gpt2LMHeadModel))
    {
        config.Validate();
        this.config = config;
        transformer = new Gpt2Model(config);
        if (!config.TieWordEmbeddings) lm_head = Projections.Linear(config.NEmbd, config.VocabSize, bias: false);
        RegisterComponents();
    }

    public override ICausalLMConfig Config => config;

    public override Tensor EmbedTokens(Tensor inputIds) => transformer.EmbedTokens(inputIds);

    protected internal override TrunkOutput Trunk(DecoderInput input) => transformer.forward(input);

    protected internal override Tensor LmHead(Tensor hidden) => lm_head is null ? TiedHead.Logits(hidden, transformer.TokenEmbedding, training) : lm_head.forward(hidden);


    public override KvCache CreateCache(long batch, int maxLength) =>
        new(config.NLayer, batch, config.NHead, Math.Min(maxLength, config.NPositions), config.NEmbd / config.NHead, ModelDType, ModelDevice);

    /// <summary>
    /// N(0, initializer_range) everywhere, then the residual projections (every c_proj) redrawn with std scaled by
    /// 1/sqrt(2·n_layer), as in GPT-2's paper and HF's _init_weights.
    /// </summary>
    public override void InitializeWeights(torch.Generator? generator = null)
    {
        using var _ = no_grad();
        double std = config.InitializerRange;
        foreach (var (name, p) in named_parameters())
        {
            if (name.EndsWith(".bias")) p.zero_();
            else if (name.Contains("ln_")) p.fill_(1.0);
            else p.normal_(0, std, generator);
        }
        foreach (var (name, p) in named_parameters())
            if (name.EndsWith(".c_proj.weight")) p.normal_(0, std / Math.Sqrt(2 * config.NLayer), generator);
    }
    protected internal override Tensor EmbedStage(Tensor inputIds, AttentionContext context) => transformer.EmbedStage(inputIds, context);
    protected internal override Tensor LayerStage(int index, Tensor hidden, AttentionContext context) => transformer.Block(index).forward(hidden, context);
    protected internal override Tensor PositionStage(Tensor tokenEmbeddings, AttentionContext context) => transformer.PositionStage(tokenEmbeddings, context);
    protected internal override Tensor NormStage(Tensor hidden) => transformer.FinalNorm.forward(hidden);
    protected internal override IEnumerable<Parameter> EmbeddingParameters() => transformer.EmbeddingParameters();
    protected internal override IEnumerable<Parameter> LayerParameters(int index) => transformer.Block(index).parameters();
    protected internal override IEnumerable<Parameter> HeadParameters() =>
        transformer.FinalNorm.parameters().Concat(lm_head?.parameters() ?? transformer.TokenEmbeddingParameters());
}
