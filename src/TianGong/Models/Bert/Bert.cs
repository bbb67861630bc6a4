using TianGong.Models.Layers;
using TorchSharp.Modules;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Models.Bert;

// BERT as in Hugging Face's modeling_bert.py: embeddings → self-attention → attention output (post-LN) →
// intermediate → output (post-LN) → layer → encoder → pooler → model → masked-LM head.
// Keys (BertModel): embeddings.{word,position,token_type}_embeddings, embeddings.LayerNorm,
// encoder.layer.{i}.attention.self.{query,key,value}, encoder.layer.{i}.attention.output.{dense,LayerNorm},
// encoder.layer.{i}.intermediate.dense, encoder.layer.{i}.output.{dense,LayerNorm}, pooler.dense.
// BertForMaskedLM: the same under bert.* (no pooler), cls.predictions.{transform.{dense,LayerNorm},bias},
// cls.predictions.decoder (untied only: tied, it is bert.embeddings.word_embeddings).

internal static class BertActivation
{
    public static Tensor Apply(string hiddenAct, Tensor x) => hiddenAct switch
    {
        "gelu" => F.gelu(x),                                                                 // exact, with erf
        "gelu_new" => F.gelu(x, GELU.Approximate.tanh),                                      // the tanh formula
        "relu" => F.relu(x),
        _ => throw new TianGongException($"hidden_act: unsupported '{hiddenAct}'"),
    };
}

public sealed class BertEmbeddings : nn.Module<Tensor, Tensor?, Tensor>
{
    private readonly EmbeddingTable word_embeddings, position_embeddings, token_type_embeddings;
    private readonly LayerNorm LayerNorm;
    private readonly Dropout dropout;
    private readonly int maxPositions;

    public BertEmbeddings(BertConfig config) : base(nameof(BertEmbeddings))
    {
        word_embeddings = new EmbeddingTable(config.VocabSize, config.HiddenSize);
        position_embeddings = new EmbeddingTable(config.MaxPositionEmbeddings, config.HiddenSize);
        token_type_embeddings = new EmbeddingTable(config.TypeVocabSize, config.HiddenSize);
        LayerNorm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps);
        dropout = nn.Dropout(config.HiddenDropoutProb);
        maxPositions = config.MaxPositionEmbeddings;
        RegisterComponents();
    }

    internal Parameter WordEmbedding => word_embeddings.weight!;

    public override Tensor forward(Tensor inputIds, Tensor? tokenTypeIds)
    {
        using var scope = NewDisposeScope();
        long t = inputIds.shape[1];
        if (t > maxPositions)
            throw new TianGongException($"sequence of {t} tokens exceeds max_position_embeddings ({maxPositions})");
        var positions = arange(t, dtype: ScalarType.Int64, device: inputIds.device);       // (T)
        // HF's default token_type_ids is a zero buffer: every token in segment A.
        tokenTypeIds ??= zeros_like(inputIds);
        var x = word_embeddings.forward(inputIds) + token_type_embeddings.forward(tokenTypeIds)
            + position_embeddings.forward(positions);                                        // (B, T, C)
        return dropout.forward(LayerNorm.forward(x)).MoveToOuterDisposeScope();
    }
}

public sealed class BertSelfAttention : nn.Module<Tensor, Tensor?, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> query, key, value;
    private readonly int heads, headDim;
    private readonly double attnDropout;

    public BertSelfAttention(BertConfig config) : base(nameof(BertSelfAttention))
    {
        query = Projections.Linear(config.HiddenSize, config.HiddenSize);
        key = Projections.Linear(config.HiddenSize, config.HiddenSize);
        value = Projections.Linear(config.HiddenSize, config.HiddenSize);
        heads = config.NumAttentionHeads;
        headDim = config.HeadSize;
        attnDropout = config.AttentionProbsDropoutProb;
        RegisterComponents();
    }

    /// <param name="keep">(B, 1, 1, T) bool, true where a key may be attended to (null: every key).</param>
    public override Tensor forward(Tensor x, Tensor? keep)
    {
        using var scope = NewDisposeScope();
        var (b, t) = (x.shape[0], x.shape[1]);
        var q = query.forward(x).view(b, t, heads, headDim).transpose(1, 2);                 // (B, H, T, D)
        var k = key.forward(x).view(b, t, heads, headDim).transpose(1, 2);
        var v = value.forward(x).view(b, t, heads, headDim).transpose(1, 2);
        // Bidirectional: no causal mask, only padding keys are hidden. Scale is 1/sqrt(D), as BERT's.
        var y = F.scaled_dot_product_attention(q, k, v, keep, p: training ? attnDropout : 0.0); // (B, H, T, D)
        return y.transpose(1, 2).reshape(b, t, heads * headDim).MoveToOuterDisposeScope();
    }
}

/// <summary>Projection, dropout, then residual and LayerNorm (BERT normalises after the sum: post-LN).</summary>
public sealed class BertSelfOutput : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> dense;
    private readonly LayerNorm LayerNorm;
    private readonly Dropout dropout;

    public BertSelfOutput(BertConfig config) : base(nameof(BertSelfOutput))
    {
        dense = Projections.Linear(config.HiddenSize, config.HiddenSize);
        LayerNorm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps);
        dropout = nn.Dropout(config.HiddenDropoutProb);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hiddenStates, Tensor residual)
    {
        using var scope = NewDisposeScope();
        return LayerNorm.forward(dropout.forward(dense.forward(hiddenStates)) + residual).MoveToOuterDisposeScope();
    }
}

public sealed class BertAttention : nn.Module<Tensor, Tensor?, Tensor>
{
    private readonly BertSelfAttention self;
    private readonly BertSelfOutput output;

    public BertAttention(BertConfig config) : base(nameof(BertAttention))
    {
        self = new BertSelfAttention(config);
        output = new BertSelfOutput(config);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, Tensor? keep)
    {
        using var scope = NewDisposeScope();
        return output.forward(self.forward(x, keep), x).MoveToOuterDisposeScope();
    }
}

public sealed class BertIntermediate : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> dense;
    private readonly string hiddenAct;

    public BertIntermediate(BertConfig config) : base(nameof(BertIntermediate))
    {
        dense = Projections.Linear(config.HiddenSize, config.IntermediateSize);
        hiddenAct = config.HiddenAct;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return BertActivation.Apply(hiddenAct, dense.forward(x)).MoveToOuterDisposeScope(); // (B, T, I)
    }
}

/// <summary>As <see cref="BertSelfOutput"/>, projecting down from intermediate_size.</summary>
public sealed class BertOutput : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> dense;
    private readonly LayerNorm LayerNorm;
    private readonly Dropout dropout;

    public BertOutput(BertConfig config) : base(nameof(BertOutput))
    {
        dense = Projections.Linear(config.IntermediateSize, config.HiddenSize);
        LayerNorm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps);
        dropout = nn.Dropout(config.HiddenDropoutProb);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hiddenStates, Tensor residual)
    {
        using var scope = NewDisposeScope();
        return LayerNorm.forward(dropout.forward(dense.forward(hiddenStates)) + residual).MoveToOuterDisposeScope();
    }
}

public sealed class BertLayer : nn.Module<Tensor, Tensor?, Tensor>
{
    private readonly BertAttention attention;
    private readonly BertIntermediate intermediate;
    private readonly BertOutput output;

    public BertLayer(BertConfig config) : base(nameof(BertLayer))
    {
        attention = new BertAttention(config);
        intermediate = new BertIntermediate(config);
        output = new BertOutput(config);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, Tensor? keep)
    {
        using var scope = NewDisposeScope();
        var h = attention.forward(x, keep);
        return output.forward(intermediate.forward(h), h).MoveToOuterDisposeScope();
    }
}

public sealed class BertEncoder : nn.Module<Tensor, Tensor?, Tensor>
{
    private readonly ModuleList<BertLayer> layer;

    public BertEncoder(BertConfig config) : base(nameof(BertEncoder))
    {
        layer = new ModuleList<BertLayer>(Enumerable.Range(0, config.NumHiddenLayers).Select(_ => new BertLayer(config)).ToArray());
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, Tensor? keep)
    {
        using var scope = NewDisposeScope();
        foreach (var l in layer) x = l.forward(x, keep);
        return x.MoveToOuterDisposeScope();
    }
}

/// <summary>dense + tanh on the first token's hidden state: BERT's sentence vector, trained by next-sentence prediction.</summary>
public sealed class BertPooler : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> dense;

    public BertPooler(BertConfig config) : base(nameof(BertPooler))
    {
        dense = Projections.Linear(config.HiddenSize, config.HiddenSize);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hiddenStates)
    {
        using var scope = NewDisposeScope();
        return dense.forward(hiddenStates.select(1, 0)).tanh().MoveToOuterDisposeScope();  // (B, C)
    }
}

/// <summary>The bare encoder: hidden states (B, T, C) and, with its pooler, the pooled first token (B, C).</summary>
public sealed class BertModel : nn.Module<Tensor, Tensor?, Tensor?, EncoderOutput>, IEncoderModel
{
    private readonly BertEmbeddings embeddings;
    private readonly BertEncoder encoder;
    private readonly BertPooler? pooler; // absent under BertForMaskedLM, as HF's add_pooling_layer=False
    private readonly BertConfig config;

    public BertModel(BertConfig config, bool addPoolingLayer = true) : base(nameof(BertModel))
    {
        config.Validate();
        this.config = config;
        embeddings = new BertEmbeddings(config);
        encoder = new BertEncoder(config);
        if (addPoolingLayer) pooler = new BertPooler(config);
        RegisterComponents();
    }

    public IModelConfig Config => config;

    internal Parameter WordEmbedding => embeddings.WordEmbedding;

    public EncoderOutput Encode(Tensor inputIds, Tensor? attentionMask = null, Tensor? tokenTypeIds = null) =>
        forward(inputIds, attentionMask, tokenTypeIds);

    public override EncoderOutput forward(Tensor inputIds, Tensor? attentionMask, Tensor? tokenTypeIds)
    {
        using var scope = NewDisposeScope();
        var (b, t) = (inputIds.shape[0], inputIds.shape[1]);
        // (B, T) of 1/0 → (B, 1, 1, T) bool, true = attend: every query row sees the same real keys.
        var keep = attentionMask is null ? null : attentionMask.ne(0).view(b, 1, 1, t);
        var hidden = encoder.forward(embeddings.forward(inputIds, tokenTypeIds), keep);      // (B, T, C)
        var pooled = pooler?.forward(hidden);                                                // (B, C)
        return new EncoderOutput(hidden.MoveToOuterDisposeScope(), pooled?.MoveToOuterDisposeScope());
    }
}

public sealed class BertPredictionHeadTransform : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> dense;
    private readonly LayerNorm LayerNorm;
    private readonly string hiddenAct;

    public BertPredictionHeadTransform(BertConfig config) : base(nameof(BertPredictionHeadTransform))
    {
        dense = Projections.Linear(config.HiddenSize, config.HiddenSize);
        LayerNorm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps);
        hiddenAct = config.HiddenAct;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return LayerNorm.forward(BertActivation.Apply(hiddenAct, dense.forward(x))).MoveToOuterDisposeScope();
    }
}

/// <summary>Transform, then scores over the vocabulary; the output bias is its own key (cls.predictions.bias), as in HF.</summary>
public sealed class BertLMPredictionHead : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly BertPredictionHeadTransform transform;
    private readonly nn.Module<Tensor, Tensor>? decoder; // absent when tied: the word embedding is the decoder weight
    private readonly Parameter bias;

    public BertLMPredictionHead(BertConfig config) : base(nameof(BertLMPredictionHead))
    {
        transform = new BertPredictionHeadTransform(config);
        if (!config.TieWordEmbeddings) decoder = Projections.Linear(config.HiddenSize, config.VocabSize, bias: false);
        bias = nn.Parameter(zeros(config.VocabSize));
        RegisterComponents();
    }

    public override Tensor forward(Tensor hiddenStates, Tensor wordEmbedding)
    {
        using var scope = NewDisposeScope();
        var h = transform.forward(hiddenStates);                                             // (B, T, C)
        var logits = decoder is null ? F.linear(h, wordEmbedding, bias) : decoder.forward(h) + bias;
        return logits.MoveToOuterDisposeScope();                                             // (B, T, V)
    }
}

public sealed class BertOnlyMLMHead : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly BertLMPredictionHead predictions;

    public BertOnlyMLMHead(BertConfig config) : base(nameof(BertOnlyMLMHead))
    {
        predictions = new BertLMPredictionHead(config);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hiddenStates, Tensor wordEmbedding) => predictions.forward(hiddenStates, wordEmbedding);
}

/// <summary>BERT with its masked-token head: logits (B, T, vocab) for every position. As an encoder it has no pooler.</summary>
public sealed class BertForMaskedLM : nn.Module<Tensor, Tensor?, Tensor?, Tensor>, IEncoderModel
{
    private readonly BertModel bert;
    private readonly BertOnlyMLMHead cls;

    public BertForMaskedLM(BertConfig config) : base(nameof(BertForMaskedLM))
    {
        bert = new BertModel(config, addPoolingLayer: false);
        cls = new BertOnlyMLMHead(config);
        RegisterComponents();
    }

    public IModelConfig Config => bert.Config;

    public EncoderOutput Encode(Tensor inputIds, Tensor? attentionMask = null, Tensor? tokenTypeIds = null) =>
        bert.forward(inputIds, attentionMask, tokenTypeIds);

    public override Tensor forward(Tensor inputIds, Tensor? attentionMask, Tensor? tokenTypeIds)
    {
        using var scope = NewDisposeScope();
        using var encoded = bert.forward(inputIds, attentionMask, tokenTypeIds);
        return cls.forward(encoded.LastHiddenState, bert.WordEmbedding).MoveToOuterDisposeScope();
    }
}
