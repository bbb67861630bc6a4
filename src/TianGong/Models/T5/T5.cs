using TianGong.Models.Layers;
using TorchSharp.Modules;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Models.T5;

// T5 as in Hugging Face's modeling_t5.py (T5ForConditionalGeneration): feed-forward → attention with relative
// position buckets → encoder/decoder block → stack → model with LM head. Keys: shared, {encoder,decoder}.block.{i}.layer.
// {0: SelfAttention.{q,k,v,o[,relative_attention_bias]}, 1 (decoder): EncDecAttention.{q,k,v,o}, last: DenseReluDense.
// {wi | wi_0, wi_1, wo}}.layer_norm, {encoder,decoder}.final_layer_norm, lm_head (untied only). encoder.embed_tokens and
// decoder.embed_tokens are `shared` itself in HF and are not saved, so the stacks here take embeddings, not ids.
//
// T5's "T5LayerNorm" is an RMS norm (no mean, no bias, fp32 variance): Layers.RMSNorm computes the same thing.

/// <summary>HF's ACT2FN entries T5 configs use.</summary>
internal static class T5Activations
{
    public static Func<Tensor, Tensor> Get(string name) => name switch
    {
        "relu" => x => F.relu(x),
        "gelu" => x => F.gelu(x),
        "gelu_new" or "gelu_pytorch_tanh" => x => F.gelu(x, GELU.Approximate.tanh), // tanh approximation, as NewGELUActivation
        "silu" => x => F.silu(x),
        _ => throw new TianGongException($"dense_act_fn: unsupported activation '{name}' (supported: {string.Join(", ", T5Config.Activations)})"),
    };
}

/// <summary>v1.0 feed-forward: wo(act(wi(x))).</summary>
public sealed class T5DenseActDense : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> wi, wo;
    private readonly Func<Tensor, Tensor> act;
    private readonly double dropout;

    public T5DenseActDense(T5Config config) : base(nameof(T5DenseActDense))
    {
        wi = Projections.Linear(config.DModel, config.DFf, bias: false);
        wo = Projections.Linear(config.DFf, config.DModel, bias: false);
        act = T5Activations.Get(config.Activation);
        dropout = config.DropoutRate;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = F.dropout(act(wi.forward(x)), dropout, training);                            // (B, T, d_ff)
        return wo.forward(h).MoveToOuterDisposeScope();
    }
}

/// <summary>v1.1 / mT5 / Flan-T5 feed-forward ("gated-gelu"): wo(act(wi_0(x)) * wi_1(x)).</summary>
public sealed class T5DenseGatedActDense : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> wi_0, wi_1, wo;
    private readonly Func<Tensor, Tensor> act;
    private readonly double dropout;

    public T5DenseGatedActDense(T5Config config) : base(nameof(T5DenseGatedActDense))
    {
        wi_0 = Projections.Linear(config.DModel, config.DFf, bias: false);
        wi_1 = Projections.Linear(config.DModel, config.DFf, bias: false);
        wo = Projections.Linear(config.DFf, config.DModel, bias: false);
        act = T5Activations.Get(config.Activation);
        dropout = config.DropoutRate;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = F.dropout(act(wi_0.forward(x)) * wi_1.forward(x), dropout, training);         // (B, T, d_ff)
        return wo.forward(h).MoveToOuterDisposeScope();
    }
}

/// <summary>Pre-norm residual feed-forward sublayer: x + dropout(ff(norm(x))).</summary>
public sealed class T5LayerFF : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> DenseReluDense; // HF's name for both the plain and the gated variant
    private readonly RMSNorm layer_norm;
    private readonly double dropout;

    public T5LayerFF(T5Config config) : base(nameof(T5LayerFF))
    {
        DenseReluDense = config.GatedFeedForward ? new T5DenseGatedActDense(config) : new T5DenseActDense(config);
        layer_norm = new RMSNorm(config.DModel, config.LayerNormEpsilon);
        dropout = config.DropoutRate;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return (x + F.dropout(DenseReluDense.forward(layer_norm.forward(x)), dropout, training)).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// Multi-head attention without biases and without the 1/sqrt(d_kv) factor: T5 folds that scale into the
/// initialisation of q. Positions enter only through an additive bias on the scores, learned per head and per
/// relative-distance bucket, and held by the first block of each stack alone (the others reuse its bias).
/// </summary>
public sealed class T5Attention : nn.Module
{
    private readonly nn.Module<Tensor, Tensor> q, k, v, o;
    private readonly EmbeddingTable? relative_attention_bias; // (num_buckets, heads), block 0 only
    private readonly int heads, dKv, numBuckets, maxDistance;
    private readonly bool bidirectional;
    private readonly double dropout;

    public T5Attention(T5Config config, bool isDecoder, bool hasRelativeAttentionBias) : base(nameof(T5Attention))
    {
        heads = config.NumHeads;
        dKv = config.DKv;
        q = Projections.Linear(config.DModel, config.InnerDim, bias: false);
        k = Projections.Linear(config.DModel, config.InnerDim, bias: false);
        v = Projections.Linear(config.DModel, config.InnerDim, bias: false);
        o = Projections.Linear(config.InnerDim, config.DModel, bias: false);
        if (hasRelativeAttentionBias) relative_attention_bias = new EmbeddingTable(config.RelativeAttentionNumBuckets, heads);
        numBuckets = config.RelativeAttentionNumBuckets;
        maxDistance = config.RelativeAttentionMaxDistance;
        bidirectional = !isDecoder; // the encoder sees both directions; the decoder only the past
        dropout = config.DropoutRate;
        RegisterComponents();
    }

    /// <summary>
    /// Maps key-minus-query distances to buckets: half of them exact for small distances, the rest logarithmic up to
    /// max_distance (farther shares the last bucket). Bidirectional splits the buckets between the two directions;
    /// causal gives every future position bucket 0 (the causal mask hides those anyway).
    /// </summary>
    public static Tensor RelativePositionBucket(Tensor relativePosition, bool bidirectional, int numBuckets, int maxDistance)
    {
        using var scope = NewDisposeScope();
        var buckets = zeros_like(relativePosition);
        var distance = relativePosition;
        if (bidirectional)
        {
            numBuckets /= 2;
            buckets = (relativePosition > 0).to(ScalarType.Int64) * numBuckets;
            distance = relativePosition.abs();
        }
        else
        {
            distance = -relativePosition.clamp_max(0);
        }
        int maxExact = numBuckets / 2;
        var isSmall = distance < maxExact;
        // Same float32 ops in the same order as HF, so distances on a bucket boundary land where HF puts them.
        // log(0) = -inf for small distances is harmless: where() takes the exact branch for them.
        var large = ((distance.to(ScalarType.Float32) / maxExact).log() / Math.Log((double)maxDistance / maxExact) * (numBuckets - maxExact))
            .to(ScalarType.Int64) + maxExact;
        large = large.clamp_max(numBuckets - 1);
        return (buckets + where(isSmall, distance, large)).MoveToOuterDisposeScope();
    }

    /// <summary>Position bias (1, H, T, S) for queries at positions start..start+T-1 against keys 0..S-1.</summary>
    public Tensor ComputeBias(long queryLength, long keyLength, long start)
    {
        if (relative_attention_bias is null) throw new InvalidOperationException("only the first block of a stack has relative_attention_bias");
        using var scope = NewDisposeScope();
        var device = relative_attention_bias.weight!.device;
        var context = arange(start, start + queryLength, dtype: ScalarType.Int64, device: device).unsqueeze(1);  // (T, 1)
        var memory = arange(keyLength, dtype: ScalarType.Int64, device: device).unsqueeze(0);                    // (1, S)
        var bucket = RelativePositionBucket(memory - context, bidirectional, numBuckets, maxDistance);          // (T, S)
        var values = relative_attention_bias.forward(bucket);                                                  // (T, S, H)
        return values.permute(2, 0, 1).unsqueeze(0).MoveToOuterDisposeScope();                                 // (1, H, T, S)
    }

    /// <summary>
    /// Self-attention when <paramref name="encoderHidden"/> is null, cross-attention to it otherwise.
    /// <paramref name="bias"/> is the position bias plus the additive mask, broadcastable to (B, H, T, S).
    /// </summary>
    public Tensor forward(Tensor x, Tensor bias, Tensor? encoderHidden, EncoderDecoderCache? cache, int layerIdx)
    {
        using var scope = NewDisposeScope();
        var (b, t) = (x.shape[0], x.shape[1]);
        var query = Heads(q.forward(x));                                                     // (B, H, T, D)
        Tensor key, value;                                                                   // (B, H, S, D)
        if (encoderHidden is null)
        {
            (key, value) = (Heads(k.forward(x)), Heads(v.forward(x)));
            if (cache is not null) (key, value) = cache.SelfAttention.Append(layerIdx, key, value);
        }
        else
        {
            (Tensor, Tensor) Project() => (Heads(k.forward(encoderHidden)), Heads(v.forward(encoderHidden)));
            (key, value) = cache is null ? Project() : cache.CrossAttention(layerIdx, Project);
        }
        // Written out rather than through SDPA: libtorch's SDPA always scales by 1/sqrt(d), which T5 must not do, and
        // undoing it (q * sqrt(d)) would be a trick that costs exactness; softmax in fp32 as HF's eager path does.
        var scores = query.matmul(key.transpose(-1, -2)) + bias;                            // (B, H, T, S)
        var weights = scores.to(ScalarType.Float32).softmax(-1).to(scores.dtype);
        weights = F.dropout(weights, dropout, training);
        var y = weights.matmul(value).transpose(1, 2).reshape(b, t, heads * dKv);          // (B, T, H*D)
        return o.forward(y).MoveToOuterDisposeScope();
    }

    private Tensor Heads(Tensor x) => x.view(x.shape[0], x.shape[1], heads, dKv).transpose(1, 2);
}

/// <summary>Pre-norm residual attention sublayer (HF's T5LayerSelfAttention / T5LayerCrossAttention, which differ only in the name).</summary>
public sealed class T5LayerAttention : nn.Module
{
    private readonly T5Attention? SelfAttention, EncDecAttention; // exactly one is set; its name is the HF key
    private readonly RMSNorm layer_norm;
    private readonly double dropout;

    public T5LayerAttention(T5Config config, bool isDecoder, bool cross, bool hasRelativeAttentionBias) : base(cross ? "T5LayerCrossAttention" : "T5LayerSelfAttention")
    {
        var attention = new T5Attention(config, isDecoder, hasRelativeAttentionBias);
        if (cross) EncDecAttention = attention;
        else SelfAttention = attention;
        layer_norm = new RMSNorm(config.DModel, config.LayerNormEpsilon);
        dropout = config.DropoutRate;
        RegisterComponents();
    }

    public T5Attention Attention => SelfAttention ?? EncDecAttention!;

    public Tensor forward(Tensor x, Tensor bias, Tensor? encoderHidden, EncoderDecoderCache? cache, int layerIdx)
    {
        using var scope = NewDisposeScope();
        var attended = Attention.forward(layer_norm.forward(x), bias, encoderHidden, cache, layerIdx);
        return (x + F.dropout(attended, dropout, training)).MoveToOuterDisposeScope();
    }
}

/// <summary>Encoder block: layer.0 self-attention, layer.1 feed-forward. Decoder block: layer.0 self, layer.1 cross, layer.2 feed-forward.</summary>
public sealed class T5Block : nn.Module
{
    private readonly ModuleList<nn.Module> layer;

    public T5Block(T5Config config, bool isDecoder, bool hasRelativeAttentionBias) : base(nameof(T5Block))
    {
        var layers = new List<nn.Module> { new T5LayerAttention(config, isDecoder, cross: false, hasRelativeAttentionBias) };
        if (isDecoder) layers.Add(new T5LayerAttention(config, isDecoder, cross: true, hasRelativeAttentionBias: false));
        layers.Add(new T5LayerFF(config));
        layer = new ModuleList<nn.Module>([.. layers]);
        RegisterComponents();
    }

    public T5Attention SelfAttention => ((T5LayerAttention)layer[0]).Attention;

    // HF clamps fp16 activations to avoid inf here; TianGong runs T5 in fp32/bf16, where that never triggers.
    public Tensor forward(Tensor x, Tensor selfBias, Tensor? encoderHidden, Tensor? crossBias, EncoderDecoderCache? cache, int layerIdx)
    {
        using var scope = NewDisposeScope();
        x = ((T5LayerAttention)layer[0]).forward(x, selfBias, null, cache, layerIdx);
        if (encoderHidden is not null) x = ((T5LayerAttention)layer[1]).forward(x, crossBias!, encoderHidden, cache, layerIdx);
        return ((T5LayerFF)layer[^1]).forward(x).MoveToOuterDisposeScope();
    }
}

/// <summary>The encoder or the decoder: blocks and the final norm over embeddings the caller looked up in `shared`.</summary>
public sealed class T5Stack : nn.Module
{
    private readonly ModuleList<T5Block> block;
    private readonly RMSNorm final_layer_norm;
    private readonly bool isDecoder;
    private readonly double dropout;

    public T5Stack(T5Config config, bool isDecoder) : base(nameof(T5Stack))
    {
        int layers = isDecoder ? config.DecoderLayers : config.NumLayers;
        block = new ModuleList<T5Block>(Enumerable.Range(0, layers).Select(i => new T5Block(config, isDecoder, hasRelativeAttentionBias: i == 0)).ToArray());
        final_layer_norm = new RMSNorm(config.DModel, config.LayerNormEpsilon);
        this.isDecoder = isDecoder;
        dropout = config.DropoutRate;
        RegisterComponents();
    }

    /// <summary>
    /// Encoder: embeddings (B, S, C) and its padding mask. Decoder: embeddings (B, T, C), the encoder output and the
    /// encoder's padding mask (applied to cross-attention), with an optional cache. Returns hidden states (B, T, C).
    /// </summary>
    public Tensor forward(Tensor embeddings, Tensor? attentionMask, Tensor? encoderHidden = null, Tensor? encoderMask = null, EncoderDecoderCache? cache = null)
    {
        using var scope = NewDisposeScope();
        long t = embeddings.shape[1];
        int start = cache?.Length ?? 0;
        var x = F.dropout(embeddings, dropout, training);
        var bias = block[0].SelfAttention.ComputeBias(t, start + t, start);                 // (1, H, T, S)
        bias = isDecoder
            ? bias + CausalMask(t, start, bias.dtype, bias.device)
            : bias + PaddingMask(attentionMask, bias.dtype);
        var crossBias = isDecoder ? PaddingMask(encoderMask, bias.dtype) : null;            // (B, 1, 1, S) or a zero
        for (int i = 0; i < block.Count; i++) x = block[i].forward(x, bias, encoderHidden, crossBias, cache, i);
        cache?.SelfAttention.Advance((int)t);
        x = F.dropout(final_layer_norm.forward(x), dropout, training);
        return x.MoveToOuterDisposeScope();
    }

    // Masked scores get dtype.min, not -inf, as in HF: a row with every key masked then stays finite (uniform) instead of NaN.
    private static Tensor PaddingMask(Tensor? attentionMask, ScalarType dtype)
    {
        if (attentionMask is null) return zeros(1, dtype: dtype);
        var blocked = attentionMask.eq(0).unsqueeze(1).unsqueeze(1);                        // (B, 1, 1, S)
        return zeros(blocked.shape, dtype, attentionMask.device).masked_fill(blocked, MinValue(dtype));
    }

    private static Tensor CausalMask(long t, long start, ScalarType dtype, Device device)
    {
        // Query i (absolute position start + i) may see keys 0..start + i.
        var blocked = ones([t, start + t], ScalarType.Bool, device).triu(start + 1);        // (T, S)
        return zeros([t, start + t], dtype, device).masked_fill(blocked, MinValue(dtype));
    }

    private static double MinValue(ScalarType dtype) => dtype switch
    {
        ScalarType.Float16 => -65504.0,
        ScalarType.BFloat16 => -3.3895313892515355e38,
        ScalarType.Float64 => double.MinValue,
        _ => float.MinValue,
    };
}

/// <summary>T5 with its LM head: the architecture of T5, mT5, Flan-T5 and Pangu's NLP model.</summary>
public sealed class T5ForConditionalGeneration : Seq2SeqLM
{
    private readonly EmbeddingTable shared;   // input embeddings of both stacks, and the LM head when tied
    private readonly T5Stack encoder, decoder;
    private readonly nn.Module<Tensor, Tensor>? lm_head;    // untied only
    private readonly T5Config config;

    public T5ForConditionalGeneration(T5Config config) : base(nameof(T5ForConditionalGeneration))
    {
        config.Validate();
        this.config = config;
        shared = new EmbeddingTable(config.VocabSize, config.DModel);
        encoder = new T5Stack(config, isDecoder: false);
        decoder = new T5Stack(config, isDecoder: true);
        if (!config.TieWordEmbeddings) lm_head = Projections.Linear(config.DModel, config.VocabSize, bias: false);
        RegisterComponents();
    }

    public override IModelConfig Config => config;
    public T5Config T5Config => config;
    public override int DecoderStartTokenId => config.DecoderStartTokenId ?? config.PadTokenId ?? 0;
    public override int? EosTokenId => config.EosTokenId;
    public override int? PadTokenId => config.PadTokenId;

    public override Tensor Encode(Tensor inputIds, Tensor? attentionMask = null)
    {
        using var scope = NewDisposeScope();
        return encoder.forward(shared.forward(inputIds), attentionMask).MoveToOuterDisposeScope(); // (B, S, C)
    }

    public override Tensor Decode(Tensor decoderInputIds, Tensor encoderHidden, Tensor? attentionMask = null, EncoderDecoderCache? cache = null)
    {
        using var scope = NewDisposeScope();
        var hidden = decoder.forward(shared.forward(decoderInputIds), null, encoderHidden, attentionMask, cache); // (B, T, C)
        // Mesh TensorFlow's T5 rescales before projecting on the shared embedding, whose init is not 1/sqrt(d)-scaled.
        if (config.ScalesDecoderOutput) hidden = hidden * Math.Pow(config.DModel, -0.5);
        var logits = lm_head is null ? F.linear(hidden, shared.weight!) : lm_head.forward(hidden);
        return logits.MoveToOuterDisposeScope();                                             // (B, T, V)
    }

    public override EncoderDecoderCache CreateCache(long batch, int maxLength) =>
        new(config.DecoderLayers, batch, config.NumHeads, maxLength, config.DKv, ModelDType, ModelDevice);

    /// <summary>HF's T5PreTrainedModel._init_weights, from torch's global generator: seed it first.</summary>
    public void InitializeWeights()
    {
        using var _ = no_grad();
        double f = config.InitializerFactor, d = config.DModel;
        foreach (var (name, p) in named_parameters())
        {
            if (name.EndsWith("layer_norm.weight")) p.fill_(f);
            else if (name is "shared.weight" or "lm_head.weight") p.normal_(0, f);
            else if (name.EndsWith(".q.weight")) p.normal_(0, f * Math.Pow(d * config.DKv, -0.5));
            else if (name.EndsWith(".o.weight")) p.normal_(0, f * Math.Pow(config.InnerDim, -0.5));
            else if (name.EndsWith(".wo.weight")) p.normal_(0, f * Math.Pow(config.DFf, -0.5));
            else p.normal_(0, f * Math.Pow(d, -0.5)); // k, v, relative_attention_bias, wi, wi_0, wi_1
        }
    }
}
