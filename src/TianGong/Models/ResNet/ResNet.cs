using System.Collections.Immutable;
using TianGong.Models.Layers;
using TorchSharp.Modules;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Models.ResNet;

// ResNet as in Hugging Face's modeling_resnet.py: conv layer (conv + BatchNorm + activation) → stem → shortcut →
// basic and bottleneck layers → stage → encoder → model → image-classification head.
// Keys (ResNetModel): embedder.embedder.{convolution,normalization}, encoder.stages.{s}.layers.{l}.layer.{k}.{convolution,
// normalization}, encoder.stages.{s}.layers.{l}.shortcut.{convolution,normalization}; every normalization carries
// weight, bias and the running_mean / running_var / num_batches_tracked buffers. ResNetForImageClassification: the
// same under resnet.*, and classifier.1 (classifier.0 is a Flatten).

internal static class ResNetActivation
{
    public static readonly ImmutableArray<string> Supported = ["relu", "gelu", "silu", "swish", "tanh"];

    public static Tensor Apply(string act, Tensor x) => act switch
    {
        "relu" => F.relu(x),
        "gelu" => F.gelu(x),
        "silu" or "swish" => F.silu(x),
        "tanh" => x.tanh(),
        _ => throw new TianGongException($"hidden_act: unsupported '{act}'"),
    };
}

/// <summary>Convolution (no bias, "same" padding), BatchNorm, then the activation unless it is null.</summary>
public sealed class ResNetConvLayer : nn.Module<Tensor, Tensor>
{
    private readonly Conv2d convolution;
    private readonly BatchNorm2d normalization;
    private readonly string? activation;

    public ResNetConvLayer(long inChannels, long outChannels, long kernelSize = 3, long stride = 1, string? activation = "relu")
        : base(nameof(ResNetConvLayer))
    {
        convolution = nn.Conv2d(inChannels, outChannels, kernelSize, stride: stride, padding: kernelSize / 2, bias: false);
        normalization = nn.BatchNorm2d(outChannels);
        this.activation = activation;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = normalization.forward(convolution.forward(x));
        return (activation is null ? h : ResNetActivation.Apply(activation, h)).MoveToOuterDisposeScope();
    }
}

/// <summary>The stem: a 7×7 stride-2 conv layer, then a 3×3 stride-2 max-pool: (B, C, H, W) → (B, E, H/4, W/4).</summary>
public sealed class ResNetEmbeddings : nn.Module<Tensor, Tensor>
{
    private readonly ResNetConvLayer embedder;
    private readonly MaxPool2d pooler;
    private readonly int numChannels;

    public ResNetEmbeddings(ResNetConfig config) : base(nameof(ResNetEmbeddings))
    {
        embedder = new ResNetConvLayer(config.NumChannels, config.EmbeddingSize, kernelSize: 7, stride: 2, activation: config.HiddenAct);
        pooler = nn.MaxPool2d(3, stride: 2, padding: 1);
        numChannels = config.NumChannels;
        RegisterComponents();
    }

    public override Tensor forward(Tensor pixelValues)
    {
        if (pixelValues.dim() != 4 || pixelValues.shape[1] != numChannels)
            throw new TianGongException($"pixel_values: this ResNet takes (B, {numChannels}, H, W), got ({string.Join(", ", pixelValues.shape)})");
        using var scope = NewDisposeScope();
        return pooler.forward(embedder.forward(pixelValues)).MoveToOuterDisposeScope();
    }
}

/// <summary>Projects the residual to the new width and stride with a 1×1 conv and BatchNorm.</summary>
public sealed class ResNetShortCut : nn.Module<Tensor, Tensor>
{
    private readonly Conv2d convolution;
    private readonly BatchNorm2d normalization;

    public ResNetShortCut(long inChannels, long outChannels, long stride) : base(nameof(ResNetShortCut))
    {
        convolution = nn.Conv2d(inChannels, outChannels, 1, stride: stride, bias: false);
        normalization = nn.BatchNorm2d(outChannels);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return normalization.forward(convolution.forward(x)).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// act(layer(x) + shortcut(x)), where layer is two 3×3 conv layers (basic) or 1×1 narrow, 3×3, 1×1 widen (bottleneck).
/// The shortcut is the identity when width and stride do not change.
/// </summary>
public sealed class ResNetResidualLayer : nn.Module<Tensor, Tensor>
{
    private readonly ResNetShortCut? shortcut;
    private readonly ModuleList<ResNetConvLayer> layer;
    private readonly string activation;

    private ResNetResidualLayer(long inChannels, long outChannels, long stride, string activation, ResNetConvLayer[] layers)
        : base(nameof(ResNetResidualLayer))
    {
        if (inChannels != outChannels || stride != 1) shortcut = new ResNetShortCut(inChannels, outChannels, stride);
        layer = new ModuleList<ResNetConvLayer>(layers);
        this.activation = activation;
        RegisterComponents();
    }

    /// <summary>transformers' ResNetBasicLayer.</summary>
    public static ResNetResidualLayer Basic(long inChannels, long outChannels, long stride, string activation) =>
        new(inChannels, outChannels, stride, activation,
        [
            new ResNetConvLayer(inChannels, outChannels, stride: stride, activation: activation),
            new ResNetConvLayer(outChannels, outChannels, activation: null),
        ]);

    /// <summary>transformers' ResNetBottleNeckLayer: the stride sits on the 3×3 conv, or on the first 1×1 with downsample_in_bottleneck.</summary>
    public static ResNetResidualLayer Bottleneck(long inChannels, long outChannels, long stride, string activation, bool downsampleInBottleneck)
    {
        long narrow = outChannels / ResNetConfig.BottleneckReduction;
        return new(inChannels, outChannels, stride, activation,
        [
            new ResNetConvLayer(inChannels, narrow, kernelSize: 1, stride: downsampleInBottleneck ? stride : 1, activation: activation),
            new ResNetConvLayer(narrow, narrow, stride: downsampleInBottleneck ? 1 : stride, activation: activation),
            new ResNetConvLayer(narrow, outChannels, kernelSize: 1, activation: null),
        ]);
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var residual = shortcut is null ? x : shortcut.forward(x);
        var h = x;
        foreach (var conv in layer) h = conv.forward(h);
        return ResNetActivation.Apply(activation, h + residual).MoveToOuterDisposeScope();
    }
}

/// <summary>depth residual layers; only the first changes width and stride.</summary>
public sealed class ResNetStage : nn.Module<Tensor, Tensor>
{
    private readonly ModuleList<ResNetResidualLayer> layers;

    public ResNetStage(ResNetConfig config, int inChannels, int outChannels, int stride, int depth) : base(nameof(ResNetStage))
    {
        ResNetResidualLayer Make(int input, int s) => config.LayerType == "bottleneck"
            ? ResNetResidualLayer.Bottleneck(input, outChannels, s, config.HiddenAct, config.DownsampleInBottleneck)
            : ResNetResidualLayer.Basic(input, outChannels, s, config.HiddenAct);
        layers = new ModuleList<ResNetResidualLayer>([Make(inChannels, stride), .. Enumerable.Range(1, depth - 1).Select(_ => Make(outChannels, 1))]);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        foreach (var l in layers) x = l.forward(x);
        return x.MoveToOuterDisposeScope();
    }
}

public sealed class ResNetEncoder : nn.Module<Tensor, Tensor>
{
    private readonly ModuleList<ResNetStage> stages;

    public ResNetEncoder(ResNetConfig config) : base(nameof(ResNetEncoder))
    {
        // The stem has already divided the resolution by 4: the first stage keeps it unless downsample_in_first_stage.
        var list = new List<ResNetStage>
        {
            new(config, config.EmbeddingSize, config.HiddenSizes[0], config.DownsampleInFirstStage ? 2 : 1, config.Depths[0]),
        };
        for (int i = 1; i < config.HiddenSizes.Count; i++)
            list.Add(new ResNetStage(config, config.HiddenSizes[i - 1], config.HiddenSizes[i], 2, config.Depths[i]));
        stages = new ModuleList<ResNetStage>(list.ToArray());
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        foreach (var stage in stages) x = stage.forward(x);
        return x.MoveToOuterDisposeScope();
    }

    /// <summary>The input and every stage's output.</summary>
    public List<Tensor> States(Tensor x)
    {
        var states = new List<Tensor> { x };
        foreach (var stage in stages) states.Add(x = stage.forward(x));
        return states;
    }
}

/// <summary>The bare ResNet: the last stage's feature map (B, C, h, w) and its global average (B, C, 1, 1).</summary>
public sealed class ResNetModel : nn.Module<Tensor, EncoderOutput>, IImageEncoder
{
    private readonly ResNetEmbeddings embedder;
    private readonly ResNetEncoder encoder;
    private readonly ResNetConfig config;

    public ResNetModel(ResNetConfig config) : base(nameof(ResNetModel))
    {
        config.Validate();
        this.config = config;
        embedder = new ResNetEmbeddings(config);
        encoder = new ResNetEncoder(config);
        RegisterComponents();
    }

    public IModelConfig Config => config;
    public int NumChannels => config.NumChannels;
    public int FeatureSize => config.HiddenSizes[^1];

    public EncoderOutput EncodeImages(Tensor pixelValues) => forward(pixelValues);

    public IReadOnlyList<Tensor> HiddenStates(Tensor pixelValues)
    {
        using var scope = NewDisposeScope();
        var states = encoder.States(embedder.forward(pixelValues));
        foreach (var state in states) state.MoveToOuterDisposeScope();
        return states;
    }

    public Tensor Features(Tensor pixelValues)
    {
        using var scope = NewDisposeScope();
        using var output = forward(pixelValues);
        return output.PoolerOutput!.flatten(1).MoveToOuterDisposeScope();                  // (B, C)
    }

    public override EncoderOutput forward(Tensor pixelValues)
    {
        using var scope = NewDisposeScope();
        var hidden = encoder.forward(embedder.forward(pixelValues));                         // (B, C, h, w)
        var pooled = F.adaptive_avg_pool2d(hidden, [1, 1]);                                  // (B, C, 1, 1)
        return new EncoderOutput(hidden.MoveToOuterDisposeScope(), pooled.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// A fresh model as transformers' ResNetPreTrainedModel._init_weights draws it: Kaiming-normal conv weights
    /// (fan_out, relu), unit BatchNorm scales and zero shifts; linear layers keep PyTorch's default.
    /// </summary>
    public void InitializeWeights()
    {
        using var _ = no_grad();
        foreach (var (_, module) in named_modules())
        {
            if (module is Conv2d conv) nn.init.kaiming_normal_(conv.weight!, mode: nn.init.FanInOut.FanOut, nonlinearity: nn.init.NonlinearityType.ReLU);
            else if (module is BatchNorm2d norm)
            {
                norm.weight!.fill_(1);
                norm.bias!.zero_();
            }
        }
    }
}

/// <summary>ResNet with a linear classifier on the pooled features: logits (B, num_labels).</summary>
public sealed class ResNetForImageClassification : nn.Module<Tensor, Tensor>, IImageClassifier
{
    private readonly ResNetModel resnet;
    // transformers' Sequential(Flatten, Linear): the list keeps its key classifier.1 and lets adapters replace the Linear.
    private readonly ModuleList<nn.Module<Tensor, Tensor>> classifier;
    private readonly ResNetConfig config;

    public ResNetForImageClassification(ResNetConfig config) : base(nameof(ResNetForImageClassification))
    {
        this.config = config;
        resnet = new ResNetModel(config);
        classifier = new ModuleList<nn.Module<Tensor, Tensor>>(nn.Flatten(), Projections.Linear(config.HiddenSizes[^1], config.Classes));
        RegisterComponents();
    }

    public IModelConfig Config => config;
    public int NumChannels => config.NumChannels;
    public int FeatureSize => config.HiddenSizes[^1];
    public int NumLabels => config.Classes;

    public EncoderOutput EncodeImages(Tensor pixelValues) => resnet.forward(pixelValues);
    public IReadOnlyList<Tensor> HiddenStates(Tensor pixelValues) => resnet.HiddenStates(pixelValues);
    public Tensor Features(Tensor pixelValues) => resnet.Features(pixelValues);
    public Tensor Classify(Tensor pixelValues) => forward(pixelValues);

    public override Tensor forward(Tensor pixelValues)
    {
        using var scope = NewDisposeScope();
        using var output = resnet.forward(pixelValues);
        var x = output.PoolerOutput!;
        foreach (var m in classifier) x = m.forward(x);
        return x.MoveToOuterDisposeScope();                                                  // (B, num_labels)
    }

    public void InitializeWeights() => resnet.InitializeWeights();
}
