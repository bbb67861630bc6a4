using System.Text.Json.Serialization;

namespace TianGong.Models.Vit;

/// <summary>
/// Vision Transformer config as Hugging Face's <c>ViTConfig</c>: the image is cut into patch_size × patch_size patches,
/// each projected to hidden_size, a [CLS] token is prepended and a pre-LayerNorm encoder runs over the sequence.
/// Property names map to config.json keys by snake_case.
/// </summary>
public sealed record ViTConfig(
    int HiddenSize = 768,
    int NumHiddenLayers = 12,
    int NumAttentionHeads = 12,
    int IntermediateSize = 3072,
    string HiddenAct = "gelu",
    double HiddenDropoutProb = 0.0,
    double AttentionProbsDropoutProb = 0.0,
    double InitializerRange = 0.02,
    double LayerNormEps = 1e-12,
    int ImageSize = 224,
    int PatchSize = 16,
    int NumChannels = 3,
    bool QkvBias = true,
    int EncoderStride = 16,
    int? PoolerOutputSize = null,
    string PoolerAct = "tanh",
    int? NumLabels = null,
    string? Architecture = null) : IModelConfig
{
    public const string BaseModel = "ViTModel";
    public const string ImageClassification = "ViTForImageClassification";

    /// <summary><c>architectures[0]</c>: ViTModel (encoder and pooler) or ViTForImageClassification (encoder and classifier).</summary>
    [JsonPropertyName("architectures"), JsonConverter(typeof(FirstArchitectureConverter))]
    public string Architecture { get; init; } = Architecture ?? BaseModel;

    /// <summary>Class names by id ("0" → "T-shirt"); its size is the number of classes when num_labels is absent.</summary>
    [JsonPropertyName("id2label")] public IReadOnlyDictionary<string, string>? Id2Label { get; init; }
    [JsonPropertyName("label2id")] public IReadOnlyDictionary<string, int>? Label2Id { get; init; }

    [JsonIgnore] public string ModelType => "vit";
    /// <summary>Images have no vocabulary.</summary>
    [JsonIgnore] public int VocabSize => 0;
    [JsonIgnore] public int HeadSize => HiddenSize / NumAttentionHeads;
    [JsonIgnore] public int NumPatches => (ImageSize / PatchSize) * (ImageSize / PatchSize);
    [JsonIgnore] public int Classes => ImageLabels.Count(Id2Label, NumLabels);

    public void Validate()
    {
        ConfigChecks.Positive("hidden_size", HiddenSize);
        ConfigChecks.Positive("num_hidden_layers", NumHiddenLayers);
        ConfigChecks.Positive("num_attention_heads", NumAttentionHeads);
        ConfigChecks.Divides("num_attention_heads", NumAttentionHeads, "hidden_size", HiddenSize);
        ConfigChecks.Positive("intermediate_size", IntermediateSize);
        ConfigChecks.OneOf("hidden_act", HiddenAct, ViTActivation.Supported);
        ConfigChecks.InRange("hidden_dropout_prob", HiddenDropoutProb, 0, 1, maxInclusive: false);
        ConfigChecks.InRange("attention_probs_dropout_prob", AttentionProbsDropoutProb, 0, 1, maxInclusive: false);
        ConfigChecks.InRange("initializer_range", InitializerRange, 0, 1, minInclusive: false);
        ConfigChecks.InRange("layer_norm_eps", LayerNormEps, 0, 1, minInclusive: false);
        ConfigChecks.Positive("image_size", ImageSize);
        ConfigChecks.Positive("patch_size", PatchSize);
        ConfigChecks.Divides("patch_size", PatchSize, "image_size", ImageSize);
        ConfigChecks.Positive("num_channels", NumChannels);
        ConfigChecks.Positive("encoder_stride", EncoderStride);
        if (PoolerOutputSize is { } pooler) ConfigChecks.Positive("pooler_output_size", pooler);
        ConfigChecks.OneOf("pooler_act", PoolerAct, ViTActivation.Supported);
        ImageLabels.Validate(Id2Label, NumLabels);
        ConfigChecks.OneOf("architectures", Architecture, BaseModel, ImageClassification);
    }
}
