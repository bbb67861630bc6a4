using TianGong.Models.Layers;

namespace TianGong.Models.Qwen2;

/// <summary>
/// Qwen2 config as transformers' Qwen2Config. Sliding-window attention applies only when <c>use_sliding_window</c> is
/// true, and then to the layers whose <c>layer_types</c> entry is "sliding_attention"; without layer_types those are
/// layers ≥ <c>max_window_layers</c>, as transformers derives them.
/// </summary>
public sealed record Qwen2Config(
    int VocabSize = 151936,
    int HiddenSize = 4096,
    int IntermediateSize = 22016,
    int NumHiddenLayers = 32,
    int NumAttentionHeads = 32,
    int? NumKeyValueHeads = 32,
    int? HeadDim = null,
    string HiddenAct = "silu",
    int MaxPositionEmbeddings = 32768,
    double RmsNormEps = 1e-6,
    double? RopeTheta = null,
    RopeParameters? RopeParameters = null,
    RopeParameters? RopeScaling = null,
    bool UseSlidingWindow = false,
    int? SlidingWindow = 4096,
    int MaxWindowLayers = 28,
    string[]? LayerTypes = null,
    double AttentionDropout = 0.0,
    double InitializerRange = 0.02,
    bool TieWordEmbeddings = false,
    int? BosTokenId = null,
    int? EosTokenId = null,
    int? PadTokenId = null) : ICausalLMConfig, ILayeredConfig
{
    [System.Text.Json.Serialization.JsonIgnore] public string ModelType => "qwen2";
    [System.Text.Json.Serialization.JsonIgnore] public string Architecture => "Qwen2ForCausalLM";
    [System.Text.Json.Serialization.JsonIgnore] public int ContextLength => MaxPositionEmbeddings;
    [System.Text.Json.Serialization.JsonIgnore] public int LayerCount => NumHiddenLayers;
    public IModelConfig WithLayerCount(int count) => this with { NumHiddenLayers = count };
    [System.Text.Json.Serialization.JsonIgnore] public int ModelWidth => HiddenSize;
    [System.Text.Json.Serialization.JsonIgnore] public int KeyValueHeads => NumKeyValueHeads ?? NumAttentionHeads;
    [System.Text.Json.Serialization.JsonIgnore] public int HeadSize => HeadDim ?? HiddenSize / NumAttentionHeads;
    /// <summary>Theta and scaling from rope_parameters (v5) or rope_theta + rope_scaling (v4).</summary>
    [System.Text.Json.Serialization.JsonIgnore] public RopeParameters Rope => RopeParameters.Resolve(RopeTheta, RopeParameters, RopeScaling).Rope;

    /// <summary>The window of one layer, or null for full causal attention.</summary>
    public int? WindowOfLayer(int layerIdx)
    {
        if (!UseSlidingWindow || SlidingWindow is null) return null;
        bool sliding = LayerTypes is { } types ? types[layerIdx] == "sliding_attention" : layerIdx >= MaxWindowLayers;
        return sliding ? SlidingWindow : null;
    }

    public void Validate()
    {
        ConfigChecks.Positive("vocab_size", VocabSize);
        ConfigChecks.Positive("hidden_size", HiddenSize);
        ConfigChecks.Positive("intermediate_size", IntermediateSize);
        ConfigChecks.Positive("num_hidden_layers", NumHiddenLayers);
        ConfigChecks.Positive("num_attention_heads", NumAttentionHeads);
        ConfigChecks.Positive("num_key_value_heads", KeyValueHeads);
        ConfigChecks.Divides("num_key_value_heads", KeyValueHeads, "num_attention_heads", NumAttentionHeads);
        if (HeadDim is null) ConfigChecks.Divides("num_attention_heads", NumAttentionHeads, "hidden_size", HiddenSize);
        ConfigChecks.Positive("head_dim", HeadSize);
        if (HeadSize % 2 != 0) throw new TianGongException($"head_dim: must be even for rotary positions, got {HeadSize}");
        ConfigChecks.OneOf("hidden_act", HiddenAct, "silu");
        ConfigChecks.Positive("max_position_embeddings", MaxPositionEmbeddings);
        ConfigChecks.InRange("rms_norm_eps", RmsNormEps, 0, 1, minInclusive: false);
        var (rope, section) = RopeParameters.Resolve(RopeTheta, RopeParameters, RopeScaling);
        rope.Validate(section);
        if (SlidingWindow is { } window) ConfigChecks.Positive("sliding_window", window);
        if (MaxWindowLayers < 0) throw new TianGongException($"max_window_layers: must be non-negative, got {MaxWindowLayers}");
        if (LayerTypes is { } types)
        {
            if (types.Length != NumHiddenLayers)
                throw new TianGongException($"layer_types: must have one entry per layer ({NumHiddenLayers}), got {types.Length}");
            foreach (var type in types) ConfigChecks.OneOf("layer_types", type, "full_attention", "sliding_attention");
        }
        ConfigChecks.InRange("attention_dropout", AttentionDropout, 0, 1, maxInclusive: false);
        ConfigChecks.InRange("initializer_range", InitializerRange, 0, 1, minInclusive: false);
    }

    public ICausalLMConfig WithTokenizer(int vocabSize, int bosTokenId, int eosTokenId) =>
        this with { VocabSize = vocabSize, BosTokenId = bosTokenId, EosTokenId = eosTokenId };
}
