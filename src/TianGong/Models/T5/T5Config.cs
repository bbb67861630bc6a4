using System.Collections.Immutable;
using System.Text.Json.Serialization;

namespace TianGong.Models.T5;

/// <summary>
/// T5 encoder-decoder config as Hugging Face's T5Config writes it (v1.0: relu FFN, tied embeddings; v1.1, mT5, Flan-T5:
/// "gated-gelu", untied). Property names map to config.json keys by snake_case.
/// </summary>
public sealed record T5Config(
    int VocabSize = 32128,
    int DModel = 512,
    int DKv = 64,
    int DFf = 2048,
    int NumLayers = 6,
    int? NumDecoderLayers = null,
    int NumHeads = 8,
    int RelativeAttentionNumBuckets = 32,
    int RelativeAttentionMaxDistance = 128,
    double DropoutRate = 0.1,
    double LayerNormEpsilon = 1e-6,
    double InitializerFactor = 1.0,
    string FeedForwardProj = "relu",
    string? DenseActFn = null,
    bool? IsGatedAct = null,
    bool TieWordEmbeddings = true,
    bool? ScaleDecoderOutputs = null,
    int? PadTokenId = 0,
    int? EosTokenId = 1,
    int? DecoderStartTokenId = 0) : IModelConfig
{
    [JsonIgnore] public string ModelType => "t5";
    [JsonIgnore] public string Architecture => "T5ForConditionalGeneration";
    [JsonIgnore] public int DecoderLayers => NumDecoderLayers ?? NumLayers;
    [JsonIgnore] public int InnerDim => NumHeads * DKv;

    // HF's T5Config.__init__ derives the activation from feed_forward_proj ("relu", "gated-gelu", "gated-silu", ...)
    // and maps "gated-gelu" to gelu_new for backwards compatibility. A config.json that also spells out dense_act_fn /
    // is_gated_act overrides them, as HF sets leftover keys on the config after __init__.
    private string[] ProjParts => FeedForwardProj.Split('-');
    [JsonIgnore] public bool GatedFeedForward => IsGatedAct ?? ProjParts[0] == "gated";
    [JsonIgnore] public string Activation => DenseActFn ?? (FeedForwardProj == "gated-gelu" ? "gelu_new" : ProjParts[^1]);

    /// <summary>Whether the decoder output is scaled by d_model^-0.5 before the LM head (HF does so when the head is the shared embedding).</summary>
    [JsonIgnore] public bool ScalesDecoderOutput => ScaleDecoderOutputs ?? TieWordEmbeddings;

    public static readonly ImmutableArray<string> Activations = ["relu", "gelu", "gelu_new", "gelu_pytorch_tanh", "silu"];

    public void Validate()
    {
        ConfigChecks.Positive("vocab_size", VocabSize);
        ConfigChecks.Positive("d_model", DModel);
        ConfigChecks.Positive("d_kv", DKv);
        ConfigChecks.Positive("d_ff", DFf);
        ConfigChecks.Positive("num_layers", NumLayers);
        ConfigChecks.Positive("num_decoder_layers", DecoderLayers);
        ConfigChecks.Positive("num_heads", NumHeads);
        // The encoder's bidirectional buckets halve num_buckets and then split them into exact and logarithmic halves again.
        if (RelativeAttentionNumBuckets < 4)
            throw new TianGongException($"relative_attention_num_buckets: must be at least 4, got {RelativeAttentionNumBuckets}");
        if (RelativeAttentionMaxDistance <= RelativeAttentionNumBuckets / 2)
            throw new TianGongException($"relative_attention_max_distance: must exceed relative_attention_num_buckets / 2 ({RelativeAttentionNumBuckets / 2}), got {RelativeAttentionMaxDistance}");
        ConfigChecks.InRange("dropout_rate", DropoutRate, 0, 1, maxInclusive: false);
        ConfigChecks.InRange("layer_norm_epsilon", LayerNormEpsilon, 0, 1, minInclusive: false);
        ConfigChecks.InRange("initializer_factor", InitializerFactor, 0, double.MaxValue, minInclusive: false);
        var parts = ProjParts;
        if ((parts.Length > 1 && parts[0] != "gated") || parts.Length > 2)
            throw new TianGongException($"feed_forward_proj: must be '{{ACT_FN}}' or 'gated-{{ACT_FN}}' (e.g. 'relu', 'gated-gelu'), got '{FeedForwardProj}'");
        ConfigChecks.OneOf(DenseActFn is null ? "feed_forward_proj" : "dense_act_fn", Activation, Activations);
    }
}
