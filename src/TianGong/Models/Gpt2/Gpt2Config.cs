namespace TianGong.Models.Gpt2;

/// <summary>
/// GPT-2 (and PanGu-α-style) config: LayerNorm, GELU, learned positions. Property names map to
/// Hugging Face's config.json keys by snake_case (NEmbd ↔ n_embd).
/// </summary>
public sealed record Gpt2Config(
    int VocabSize = 50257,
    int NPositions = 1024,
    int NEmbd = 768,
    int NLayer = 12,
    int NHead = 12,
    int? NInner = null,
    string ActivationFunction = "gelu_new",
    double ResidPdrop = 0.1,
    double EmbdPdrop = 0.1,
    double AttnPdrop = 0.1,
    double LayerNormEpsilon = 1e-5,
    double InitializerRange = 0.02,
    bool ScaleAttnWeights = true,
    bool ScaleAttnByInverseLayerIdx = false,
    bool ReorderAndUpcastAttn = false,
    bool TieWordEmbeddings = true,
    int? BosTokenId = 50256,
    int? EosTokenId = 50256,
    int? PadTokenId = null) : ICausalLMConfig, ILayeredConfig
{
    [System.Text.Json.Serialization.JsonIgnore] public string ModelType => "gpt2";
    [System.Text.Json.Serialization.JsonIgnore] public string Architecture => "GPT2LMHeadModel";
    [System.Text.Json.Serialization.JsonIgnore] public int ContextLength => NPositions;
    [System.Text.Json.Serialization.JsonIgnore] public int LayerCount => NLayer;
    public IModelConfig WithLayerCount(int count) => this with { NLayer = count };
    [System.Text.Json.Serialization.JsonIgnore] public int ModelWidth => NEmbd;
    [System.Text.Json.Serialization.JsonIgnore] public int InnerSize => NInner ?? 4 * NEmbd;

    public void Validate()
    {
        ConfigChecks.Positive("vocab_size", VocabSize);
        ConfigChecks.Positive("n_positions", NPositions);
        ConfigChecks.Positive("n_embd", NEmbd);
        ConfigChecks.Positive("n_layer", NLayer);
        ConfigChecks.Positive("n_head", NHead);
        ConfigChecks.Divides("n_head", NHead, "n_embd", NEmbd);
        if (NInner is { } inner) ConfigChecks.Positive("n_inner", inner);
        ConfigChecks.OneOf("activation_function", ActivationFunction, "gelu_new", "gelu", "gelu_pytorch_tanh", "relu", "silu");
        ConfigChecks.InRange("resid_pdrop", ResidPdrop, 0, 1, maxInclusive: false);
        ConfigChecks.InRange("embd_pdrop", EmbdPdrop, 0, 1, maxInclusive: false);
        ConfigChecks.InRange("attn_pdrop", AttnPdrop, 0, 1, maxInclusive: false);
        ConfigChecks.InRange("layer_norm_epsilon", LayerNormEpsilon, 0, 1, minInclusive: false);
        ConfigChecks.InRange("initializer_range", InitializerRange, 0, 1, minInclusive: false);
        if (!ScaleAttnWeights) throw new TianGongException("scale_attn_weights: only true is supported");
        if (ScaleAttnByInverseLayerIdx) throw new TianGongException("scale_attn_by_inverse_layer_idx: only false is supported");
    }

    public ICausalLMConfig WithTokenizer(int vocabSize, int bosTokenId, int eosTokenId) =>
        this with { VocabSize = vocabSize, BosTokenId = bosTokenId, EosTokenId = eosTokenId };
}
