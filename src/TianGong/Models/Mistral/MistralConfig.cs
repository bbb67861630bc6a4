using TianGong.Models.Layers;

namespace TianGong.Models.Mistral;

/// <summary>
/// Mistral config as transformers' MistralConfig: Llama's layout (no biases) plus <c>sliding_window</c>, the number of
/// newest positions, itself included, that each token attends to. Null means full causal attention (Mistral v0.2 on);
/// a config.json without the key gets transformers' default of 4096.
/// </summary>
public sealed record MistralConfig(
    int VocabSize = 32000,
    int HiddenSize = 4096,
    int IntermediateSize = 14336,
    int NumHiddenLayers = 32,
    int NumAttentionHeads = 32,
    int? NumKeyValueHeads = 8,
    int? HeadDim = null,
    string HiddenAct = "silu",
    int MaxPositionEmbeddings = 4096 * 32,
    double RmsNormEps = 1e-6,
    double? RopeTheta = null,
    RopeParameters? RopeParameters = null,
    RopeParameters? RopeScaling = null,
    int? SlidingWindow = 4096,
    double AttentionDropout = 0.0,
    double InitializerRange = 0.02,
    bool TieWordEmbeddings = false,
    int? BosTokenId = 1,
    int? EosTokenId = 2,
    int? PadTokenId = null) : ICausalLMConfig, ILayeredConfig
{
    [System.Text.Json.Serialization.JsonIgnore] public string ModelType => "mistral";
    [System.Text.Json.Serialization.JsonIgnore] public string Architecture => "MistralForCausalLM";
    [System.Text.Json.Serialization.JsonIgnore] public int ContextLength => MaxPositionEmbeddings;
    [System.Text.Json.Serialization.JsonIgnore] public int LayerCount => NumHiddenLayers;
    public IModelConfig WithLayerCount(int count) => this with { NumHiddenLayers = count };
    [System.Text.Json.Serialization.JsonIgnore] public int ModelWidth => HiddenSize;
    [System.Text.Json.Serialization.JsonIgnore] public int KeyValueHeads => NumKeyValueHeads ?? NumAttentionHeads;
    [System.Text.Json.Serialization.JsonIgnore] public int HeadSize => HeadDim ?? HiddenSize / NumAttentionHeads;
    /// <summary>Theta and scaling from rope_parameters (v5) or rope_theta + rope_scaling (v4).</summary>
    [System.Text.Json.Serialization.JsonIgnore] public RopeParameters Rope => RopeParameters.Resolve(RopeTheta, RopeParameters, RopeScaling).Rope;

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
        ConfigChecks.InRange("attention_dropout", AttentionDropout, 0, 1, maxInclusive: false);
        ConfigChecks.InRange("initializer_range", InitializerRange, 0, 1, minInclusive: false);
    }

    public ICausalLMConfig WithTokenizer(int vocabSize, int bosTokenId, int eosTokenId) =>
        this with { VocabSize = vocabSize, BosTokenId = bosTokenId, EosTokenId = eosTokenId };
}
