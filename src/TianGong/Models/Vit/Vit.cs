using System.Collections.Immutable;
using TianGong.Models.Layers;
using TorchSharp.Modules;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Models.Vit;

// ViT as in Hugging Face's modeling_vit.py: patch embeddings → self-attention → attention output → intermediate →
// output (with the residual) → pre-LN layer → encoder → pooler → model → image-classification head.
// Keys (ViTModel): embeddings.{cls_token,position_embeddings,patch_embeddings.projection},
// encoder.layer.{i}.{layernorm_before,layernorm_after}, encoder.layer.{i}.attention.attention.{query,key,value},
// encoder.layer.{i}.attention.output.dense, encoder.layer.{i}.intermediate.dense, encoder.layer.{i}.output.dense,
// layernorm, pooler.dense. ViTForImageClassification: the same under vit.* (no pooler), and classifier.

internal static class ViTActivation
{
    public static readonly ImmutableArray<string> Supported = ["gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "tanh"];

    public static Tensor Apply(string act, Tensor x) => act switch
    {
        "gelu" => F.gelu(x),                                                                 // exact, with erf
        "gelu_new" or "gelu_pytorch_tanh" => F.gelu(x, GELU.Approximate.tanh),
        "relu" => F.relu(x),
        "tanh" => x.tanh(),
        _ => throw new TianGongException($"hidden_act: unsupported '{act}'"),
    };
}

/// <summary>
/// A conv with kernel = stride = patch_size cuts the image into non-overlapping patches and projects each one:
/// (B, C, H, W) → (B, patches, hidden). A convolution, not a linear projection: adapters do not target it.
/// </summary>
public sealed class ViTPatchEmbeddings : nn.Module<Tensor, Tensor>
{
    private readonly Conv2d projection;
    private readonly int imageSize, numChannels;

    public ViTPatchEmbeddings(ViTConfig config) : base(nameof(ViTPatchEmbeddings))
    {
        projection = nn.Conv2d(config.NumChannels, config.HiddenSize, config.PatchSize, stride: config.PatchSize);
        (imageSize, numChannels) = (config.ImageSize, config.NumChannels);
        RegisterComponents();
    }

    public override Tensor forward(Tensor pixelValues)
    {
        // transformers can interpolate the position table to other sizes (interpolate_pos_encoding); we take the trained size only.
        if (pixelValues.dim() != 4 || pixelValues.shape[1] != numChannels || pixelValues.shape[2] != imageSize || pixelValues.shape[3] != imageSize)
            throw new TianGongException($"pixel_values: this ViT takes (B, {numChannels}, {imageSize}, {imageSize}), got ({string.Join(", ", pixelValues.shape)})");
        using var scope = NewDisposeScope();
        return projection.forward(pixelValues).flatten(2).transpose(1, 2).MoveToOuterDisposeScope(); // (B, N, C)
    }
}

public sealed class ViTEmbeddings : nn.Module<Tensor, Tensor>
{
    private readonly Parameter cls_token, position_embeddings;
    private readonly ViTPatchEmbeddings patch_embeddings;
    private readonly Dropout dropout;

    public ViTEmbeddings(ViTConfig config) : base(nameof(ViTEmbeddings))
    {
        cls_token = nn.Parameter(zeros(1, 1, config.HiddenSize));
        patch_embeddings = new ViTPatchEmbeddings(config);
        position_embeddings = nn.Parameter(zeros(1, config.NumPatches + 1, config.HiddenSize));
        dropout = nn.Dropout(config.HiddenDropoutProb);
        RegisterComponents();
    }

    public override Tensor forward(Tensor pixelValues)
    {
        using var scope = NewDisposeScope();
        var patches = patch_embeddings.forward(pixelValues);                                 // (B, N, C)
        var cls = cls_token.expand(patches.shape[0], -1, -1);                                // (B, 1, C)
        var x = cat([cls, patches], 1) + position_embeddings;                                // (B, 1 + N, C)
        return dropout.forward(x).MoveToOuterDisposeScope();
    }

    internal void Initialize(double std)
    {
        using var _ = no_grad();
        ViTInit.TruncatedNormal(cls_token, std);
        ViTInit.TruncatedNormal(position_embeddings, std);
    }
}

public sealed class ViTSelfAttention : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> query, key, value;
    private readonly int heads, headDim;
    private readonly double attnDropout;

    public ViTSelfAttention(ViTConfig config) : base(nameof(ViTSelfAttention))
    {
        query = Projections.Linear(config.HiddenSize, config.HiddenSize, bias: config.QkvBias);
        key = Projections.Linear(config.HiddenSize, config.HiddenSize, bias: config.QkvBias);
        value = Projections.Linear(config.HiddenSize, config.HiddenSize, bias: config.QkvBias);
        (heads, headDim, attnDropout) = (config.NumAttentionHeads, config.HeadSize, config.AttentionProbsDropoutProb);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var (b, t) = (x.shape[0], x.shape[1]);
        var q = query.forward(x).view(b, t, heads, headDim).transpose(1, 2);                 // (B, H, T, D)
        var k = key.forward(x).view(b, t, heads, headDim).transpose(1, 2);
        var v = value.forward(x).view(b, t, heads, headDim).transpose(1, 2);
        // Every patch sees every patch: no mask. Scale 1/sqrt(D), as ViT's.
        var y = F.scaled_dot_product_attention(q, k, v, p: training ? attnDropout : 0.0);    // (B, H, T, D)
        return y.transpose(1, 2).reshape(b, t, heads * headDim).MoveToOuterDisposeScope();
    }
}

/// <summary>Projection and dropout only: unlike BERT, the residual is added by the layer (pre-LN).</summary>
public sealed class ViTSelfOutput : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> dense;
    private readonly Dropout dropout;

    public ViTSelfOutput(ViTConfig config) : base(nameof(ViTSelfOutput))
    {
        dense = Projections.Linear(config.HiddenSize, config.HiddenSize);
        dropout = nn.Dropout(config.HiddenDropoutProb);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => dropout.forward(dense.forward(x));
}

public sealed class ViTAttention : nn.Module<Tensor, Tensor>
{
    private readonly ViTSelfAttention attention;
    private readonly ViTSelfOutput output;

    public ViTAttention(ViTConfig config) : base(nameof(ViTAttention))
    {
        attention = new ViTSelfAttention(config);
        output = new ViTSelfOutput(config);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return output.forward(attention.forward(x)).MoveToOuterDisposeScope();
    }
}

public sealed class ViTIntermediate : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> dense;
    private readonly string hiddenAct;

    public ViTIntermediate(ViTConfig config) : base(nameof(ViTIntermediate))
    {
        dense = Projections.Linear(config.HiddenSize, config.IntermediateSize);
        hiddenAct = config.HiddenAct;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return ViTActivation.Apply(hiddenAct, dense.forward(x)).MoveToOuterDisposeScope();  // (B, T, I)
    }
}

/// <summary>Down-projection, dropout, then the residual of the attention block.</summary>
public sealed class ViTOutput : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> dense;
    private readonly Dropout dropout;

    public ViTOutput(ViTConfig config) : base(nameof(ViTOutput))
    {
        dense = Projections.Linear(config.IntermediateSize, config.HiddenSize);
        dropout = nn.Dropout(config.HiddenDropoutProb);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hiddenStates, Tensor residual)
    {
        using var scope = NewDisposeScope();
        return (dropout.forward(dense.forward(hiddenStates)) + residual).MoveToOuterDisposeScope();
    }
}

/// <summary>Pre-LN: x + attention(LN(x)), then h + MLP(LN(h)).</summary>
public sealed class ViTLayer : nn.Module<Tensor, Tensor>
{
    private readonly ViTAttention attention;
    private readonly ViTIntermediate intermediate;
    private readonly ViTOutput output;
    private readonly LayerNorm layernorm_before, layernorm_after;

    public ViTLayer(ViTConfig config) : base(nameof(ViTLayer))
    {
        attention = new ViTAttention(config);
        intermediate = new ViTIntermediate(config);
        output = new ViTOutput(config);
        layernorm_before = nn.LayerNorm(config.HiddenSize, config.LayerNormEps);
        layernorm_after = nn.LayerNorm(config.HiddenSize, config.LayerNormEps);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = attention.forward(layernorm_before.forward(x)) + x;
        return output.forward(intermediate.forward(layernorm_after.forward(h)), h).MoveToOuterDisposeScope();
    }
}

public sealed class ViTEncoder : nn.Module<Tensor, Tensor>
{
    private readonly ModuleList<ViTLayer> layer;

    public ViTEncoder(ViTConfig config) : base(nameof(ViTEncoder))
    {
        layer = new ModuleList<ViTLayer>(Enumerable.Range(0, config.NumHiddenLayers).Select(_ => new ViTLayer(config)).ToArray());
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        foreach (var l in layer) x = l.forward(x);
        return x.MoveToOuterDisposeScope();
    }

    /// <summary>The input and every layer's output.</summary>
    public List<Tensor> States(Tensor x)
    {
        var states = new List<Tensor> { x };
        foreach (var l in layer) states.Add(x = l.forward(x));
        return states;
    }
}

/// <summary>dense + activation (tanh) on the [CLS] token's final state.</summary>
public sealed class ViTPooler : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> dense;
    private readonly string act;

    public ViTPooler(ViTConfig config) : base(nameof(ViTPooler))
    {
        dense = Projections.Linear(config.HiddenSize, config.PoolerOutputSize ?? config.HiddenSize);
        act = config.PoolerAct;
        RegisterComponents();
    }

    public override Tensor forward(Tensor hiddenStates)
    {
        using var scope = NewDisposeScope();
        return ViTActivation.Apply(act, dense.forward(hiddenStates.select(1, 0))).MoveToOuterDisposeScope(); // (B, P)
    }
}

/// <summary>The bare ViT: hidden states (B, 1 + patches, C) after the final LayerNorm and, with its pooler, (B, P).</summary>
public sealed class ViTModel : nn.Module<Tensor, EncoderOutput>, IImageEncoder
{
    private readonly ViTEmbeddings embeddings;
    private readonly ViTEncoder encoder;
    private readonly LayerNorm layernorm;
    private readonly ViTPooler? pooler; // absent under ViTForImageClassification, as HF's add_pooling_layer=False
    private readonly ViTConfig config;

    public ViTModel(ViTConfig config, bool addPoolingLayer = true) : base(nameof(ViTModel))
    {
        config.Validate();
        this.config = config;
        embeddings = new ViTEmbeddings(config);
        encoder = new ViTEncoder(config);
        layernorm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps);
        if (addPoolingLayer) pooler = new ViTPooler(config);
        RegisterComponents();
    }

    public IModelConfig Config => config;
    public int NumChannels => config.NumChannels;
    public int FeatureSize => config.HiddenSize;

    public EncoderOutput EncodeImages(Tensor pixelValues) => forward(pixelValues);

    public IReadOnlyList<Tensor> HiddenStates(Tensor pixelValues)
    {
        using var scope = NewDisposeScope();
        var states = encoder.States(embeddings.forward(pixelValues));
        foreach (var state in states) state.MoveToOuterDisposeScope();
        return states;
    }

    public Tensor Features(Tensor pixelValues)
    {
        using var scope = NewDisposeScope();
        using var output = forward(pixelValues);
        return output.LastHiddenState.select(1, 0).MoveToOuterDisposeScope();              // (B, C)
    }

    public override EncoderOutput forward(Tensor pixelValues)
    {
        using var scope = NewDisposeScope();
        var hidden = layernorm.forward(encoder.forward(embeddings.forward(pixelValues)));    // (B, T, C)
        var pooled = pooler?.forward(hidden);                                                // (B, P)
        return new EncoderOutput(hidden.MoveToOuterDisposeScope(), pooled?.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// A fresh model as transformers' ViTPreTrainedModel._init_weights draws it: truncated normal (std
    /// initializer_range) for linear and conv weights, the [CLS] token and position table; zero biases; unit LayerNorms.
    /// </summary>
    public void InitializeWeights() => ViTInit.Apply(this, config.InitializerRange);
}

/// <summary>ViT with a linear classifier on the [CLS] state: logits (B, num_labels).</summary>
public sealed class ViTForImageClassification : nn.Module<Tensor, Tensor>, IImageClassifier
{
    private readonly ViTModel vit;
    private readonly nn.Module<Tensor, Tensor> classifier;
    private readonly ViTConfig config;

    public ViTForImageClassification(ViTConfig config) : base(nameof(ViTForImageClassification))
    {
        this.config = config;
        vit = new ViTModel(config, addPoolingLayer: false);
        classifier = Projections.Linear(config.HiddenSize, config.Classes);
        RegisterComponents();
    }

    public IModelConfig Config => config;
    public int NumChannels => config.NumChannels;
    public int FeatureSize => config.HiddenSize;
    public int NumLabels => config.Classes;

    public EncoderOutput EncodeImages(Tensor pixelValues) => vit.forward(pixelValues);
    public IReadOnlyList<Tensor> HiddenStates(Tensor pixelValues) => vit.HiddenStates(pixelValues);
    public Tensor Features(Tensor pixelValues) => vit.Features(pixelValues);
    public Tensor Classify(Tensor pixelValues) => forward(pixelValues);

    public override Tensor forward(Tensor pixelValues)
    {
        using var scope = NewDisposeScope();
        return classifier.forward(vit.Features(pixelValues)).MoveToOuterDisposeScope();      // (B, num_labels)
    }

    public void InitializeWeights() => ViTInit.Apply(this, config.InitializerRange);
}

internal static class ViTInit
{
    public static void Apply(nn.Module root, double std)
    {
        using var _ = no_grad();
        foreach (var (_, module) in root.named_modules())
        {
            if (LinearLayers.Describe(module) is { } linear)
            {
                TruncatedNormal(linear.Weight, std);
                linear.Bias?.zero_();
            }
            else if (module is Conv2d conv)
            {
                TruncatedNormal(conv.weight!, std);
                conv.bias?.zero_();
            }
            else if (module is LayerNorm norm)
            {
                norm.weight!.fill_(1);
                norm.bias!.zero_();
            }
            else if (module is ViTEmbeddings embeddings) embeddings.Initialize(std);
        }
    }

    /// <summary>
    /// transformers calls nn.init.trunc_normal_(mean 0, std) with PyTorch's default cut-offs, ±2 in absolute value: at
    /// std 0.02 that is 100 standard deviations, so a normal draw clamped to ±2 has the same distribution. (TorchSharp
    /// 0.107's trunc_normal_(t, 0, 0.02) left a (1, 17, 64) table with a std of 1e-9 here.)
    /// </summary>
    public static void TruncatedNormal(Tensor weight, double std) => weight.normal_(0, std).clamp_(-2, 2);
}
