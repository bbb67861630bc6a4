using System.Text.Json.Serialization;

namespace TianGong.Models.Bert;

/// <summary>
/// BERT config as Hugging Face's <c>BertConfig</c>: post-LayerNorm encoder, learned absolute positions,
/// token-type (segment) embeddings. Property names map to config.json keys by snake_case.
/// </summary>
public sealed record BertConfig(
    int VocabSize = 30522,
    int HiddenSize = 768,
    int NumHiddenLayers = 12,
    int NumAttentionHeads = 12,
    int IntermediateSize = 3072,
    string HiddenAct = "gelu",
    double HiddenDropoutProb = 0.1,
    double AttentionProbsDropoutProb = 0.1,
    int MaxPositionEmbeddings = 512,
    int TypeVocabSize = 2,
    double InitializerRange = 0.02,
    double LayerNormEps = 1e-12,
    int? PadTokenId = 0,
    string PositionEmbeddingType = "absolute",
    bool IsDecoder = false,
    bool AddCrossAttention = false,
    double? ClassifierDropout = null,
    bool TieWordEmbeddings = true,
    string? Architecture = null) : ILayeredConfig
{
    public const string BaseModel = "BertModel";
    public const string MaskedLM = "BertForMaskedLM";

    /// <summary>
    /// <c>architectures[0]</c>: which head the weights carry (BertModel or BertForMaskedLM). Unlike gpt2 and llama,
    /// one bert model_type names several classes, so the config keeps it; absent means BertModel, as in transformers' AutoModel.
    /// </summary>
    [JsonPropertyName("architectures"), JsonConverter(typeof(FirstArchitectureConverter))]
    public string Architecture { get; init; } = Architecture ?? BaseModel;

    [JsonIgnore] public string ModelType => "bert";
    [JsonIgnore] public int LayerCount => NumHiddenLayers;
    public IModelConfig WithLayerCount(int count) => this with { NumHiddenLayers = count };
    [JsonIgnore] public int HeadSize => HiddenSize / NumAttentionHeads;

    public void Validate()
    {
        ConfigChecks.Positive("vocab_size", VocabSize);
        ConfigChecks.Positive("hidden_size", HiddenSize);
        ConfigChecks.Positive("num_hidden_layers", NumHiddenLayers);
        ConfigChecks.Positive("num_attention_heads", NumAttentionHeads);
        ConfigChecks.Divides("num_attention_heads", NumAttentionHeads, "hidden_size", HiddenSize);
        ConfigChecks.Positive("intermediate_size", IntermediateSize);
        ConfigChecks.OneOf("hidden_act", HiddenAct, "gelu", "gelu_new", "relu");
        ConfigChecks.InRange("hidden_dropout_prob", HiddenDropoutProb, 0, 1, maxInclusive: false);
        ConfigChecks.InRange("attention_probs_dropout_prob", AttentionProbsDropoutProb, 0, 1, maxInclusive: false);
        ConfigChecks.Positive("max_position_embeddings", MaxPositionEmbeddings);
        ConfigChecks.Positive("type_vocab_size", TypeVocabSize);
        ConfigChecks.InRange("initializer_range", InitializerRange, 0, 1, minInclusive: false);
        ConfigChecks.InRange("layer_norm_eps", LayerNormEps, 0, 1, minInclusive: false);
        if (PadTokenId is { } pad) ConfigChecks.InRange("pad_token_id", pad, 0, VocabSize, maxInclusive: false);
        // relative_key(_query) adds a distance embedding inside attention: a different model, not a switch on this one.
        if (PositionEmbeddingType != "absolute")
            throw new TianGongException($"position_embedding_type: only 'absolute' is supported, got '{PositionEmbeddingType}'");
        if (IsDecoder) throw new TianGongException("is_decoder: only false is supported (bert is read as a bidirectional encoder)");
        if (AddCrossAttention) throw new TianGongException("add_cross_attention: only false is supported");
        ConfigChecks.OneOf("architectures", Architecture, BaseModel, MaskedLM);
    }
}
