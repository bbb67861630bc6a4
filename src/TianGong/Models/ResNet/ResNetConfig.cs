using System.Text.Json.Serialization;

namespace TianGong.Models.ResNet;

/// <summary>
/// ResNet config as Hugging Face's <c>ResNetConfig</c>: a 7×7 stride-2 stem and max-pool, then one stage per entry of
/// hidden_sizes / depths of basic (two 3×3) or bottleneck (1×1, 3×3, 1×1) residual layers, each later stage
/// halving the resolution. Property names map to config.json keys by snake_case; the backbone fields transformers
/// also writes (stage_names, out_features, out_indices) are not read.
/// </summary>
public sealed record ResNetConfig(
    int NumChannels = 3,
    int EmbeddingSize = 64,
    IReadOnlyList<int>? HiddenSizes = null,
    IReadOnlyList<int>? Depths = null,
    string LayerType = "bottleneck",
    string HiddenAct = "relu",
    bool DownsampleInFirstStage = false,
    bool DownsampleInBottleneck = false,
    int? NumLabels = null,
    string? Architecture = null) : IModelConfig
{
    public const string BaseModel = "ResNetModel";
    public const string ImageClassification = "ResNetForImageClassification";

    /// <summary>The bottleneck's 1×1 convolutions narrow to out_channels / 4 (transformers' reduction).</summary>
    public const int BottleneckReduction = 4;

    // ResNet-50's, as transformers' defaults.
    public IReadOnlyList<int> HiddenSizes { get; init; } = HiddenSizes ?? [256, 512, 1024, 2048];
    public IReadOnlyList<int> Depths { get; init; } = Depths ?? [3, 4, 6, 3];

    [JsonPropertyName("architectures"), JsonConverter(typeof(FirstArchitectureConverter))]
    public string Architecture { get; init; } = Architecture ?? BaseModel;

    [JsonPropertyName("id2label")] public IReadOnlyDictionary<string, string>? Id2Label { get; init; }
    [JsonPropertyName("label2id")] public IReadOnlyDictionary<string, int>? Label2Id { get; init; }

    [JsonIgnore] public string ModelType => "resnet";
    /// <summary>Images have no vocabulary.</summary>
    [JsonIgnore] public int VocabSize => 0;
    [JsonIgnore] public int Classes => ImageLabels.Count(Id2Label, NumLabels);

    public void Validate()
    {
        ConfigChecks.Positive("num_channels", NumChannels);
        ConfigChecks.Positive("embedding_size", EmbeddingSize);
        if (HiddenSizes.Count == 0) throw new TianGongException("hidden_sizes: must name at least one stage");
        if (Depths.Count != HiddenSizes.Count)
            throw new TianGongException($"depths: must give one depth per stage of hidden_sizes ({HiddenSizes.Count}), got {Depths.Count}");
        for (int i = 0; i < HiddenSizes.Count; i++)
        {
            ConfigChecks.Positive($"hidden_sizes[{i}]", HiddenSizes[i]);
            ConfigChecks.Positive($"depths[{i}]", Depths[i]);
            if (LayerType == "bottleneck" && HiddenSizes[i] % BottleneckReduction != 0)
                throw new TianGongException($"hidden_sizes[{i}]: a bottleneck stage needs a multiple of {BottleneckReduction}, got {HiddenSizes[i]}");
        }
        ConfigChecks.OneOf("layer_type", LayerType, "basic", "bottleneck");
        ConfigChecks.OneOf("hidden_act", HiddenAct, ResNetActivation.Supported);
        ImageLabels.Validate(Id2Label, NumLabels);
        ConfigChecks.OneOf("architectures", Architecture, BaseModel, ImageClassification);
    }
}
