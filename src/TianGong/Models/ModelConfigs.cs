using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using TianGong.Models.Bert;
using TianGong.Models.Gpt2;
using TianGong.Models.Llama;
using TianGong.Models.T5;
using TianGong.Models.Mistral;
using TianGong.Models.Qwen2;

namespace TianGong.Models;

/// <summary>One supported architecture: its model_type, config record and model constructor.</summary>
public sealed record ModelFamily(
    string ModelType,
    Type ConfigType,
    Func<JsonNode, string, bool, IModelConfig> Parse,
    Func<IModelConfig, JsonObject> ToJson,
    Func<IModelConfig, nn.Module> Create)
{
    /// <summary>
    /// transformers' base_model_prefix: checkpoints of the bare trunk (GPT-2's own files say <c>h.0...</c>) and of
    /// the model with a head (<c>transformer.h.0...</c>) load into either, by adding or removing this prefix.
    /// </summary>
    public string? BaseModelPrefix { get; init; }

    /// <summary>
    /// transformers' _keys_to_ignore_on_load_unexpected: tensors real checkpoints carry that the model rebuilds
    /// (causal-mask buffers, rotary inv_freq, a tied head's copy), as regular expressions.
    /// </summary>
    public IReadOnlyList<string> IgnoredCheckpointKeys { get; init; } = [];

    public static ModelFamily Of<TConfig>(string modelType, Func<TConfig, nn.Module> create) where TConfig : IModelConfig => new(
        modelType,
        typeof(TConfig),
        (node, where, strict) => ConfigJson.Read<TConfig>(node, where, strict, ModelConfigs.BookkeepingNotIn<TConfig>()),
        config => ConfigJson.ToNode((TConfig)config),
        config => create((TConfig)config));
}

/// <summary>Reads and writes Hugging Face <c>config.json</c> for every supported family, and builds the matching model.</summary>
public static class ModelConfigs
{
    /// <summary>Every architecture TianGong runs, by model_type: what loading, saving and building a model need.</summary>
    /// <remarks>
    /// A new family is one line here for loading, training and generation, but the stages that know a family's layout
    /// register it separately: the tensor-parallel plan (Parallel/Tensor/TensorParallelPlan.For), head and MLP pruning
    /// (Compression/Extraction/StructuredPruning: PrunableShape.Of), extraction by depth (implement <see cref="ILayeredConfig"/>
    /// on the config record, and add the block-key segment to LayerExtraction's BlockKey pattern if it is new), the
    /// parallel planner's reading of config.json field names (Parallel/Planning/ModelShape), ONNX export
    /// (Export/Onnx/OnnxDecoder: DecoderShape.Of) and GGUF export (Export/Gguf/GgufExporter.Describe and its tensor names).
    /// </remarks>
    public static readonly IReadOnlyList<ModelFamily> Families =
    [
        ModelFamily.Of<Gpt2Config>("gpt2", c => new Gpt2LMHeadModel(c))
            with { BaseModelPrefix = "transformer", IgnoredCheckpointKeys = [@"\.attn\.(masked_)?bias$", @"^lm_head\.weight$"] },
        ModelFamily.Of<LlamaConfig>("llama", c => new LlamaForCausalLM(c))
            with { BaseModelPrefix = "model", IgnoredCheckpointKeys = [@"rotary_emb\.inv_freq$", @"^lm_head\.weight$"] },
        ModelFamily.Of<BertConfig>("bert", c => c.Architecture == BertConfig.MaskedLM ? new BertForMaskedLM(c) : new BertModel(c))
            with { BaseModelPrefix = "bert", IgnoredCheckpointKeys = [@"position_ids$", @"^cls\.", @"^pooler\.", @"^cls\.predictions\.decoder\.(weight|bias)$"] },
        ModelFamily.Of<T5Config>("t5", c => new T5ForConditionalGeneration(c))
            with { IgnoredCheckpointKeys = [@"^(encoder|decoder)\.embed_tokens\.weight$", @"^lm_head\.weight$"] },
        ModelFamily.Of<MistralConfig>("mistral", c => new MistralForCausalLM(c))
            with { BaseModelPrefix = "model", IgnoredCheckpointKeys = [@"rotary_emb\.inv_freq$", @"^lm_head\.weight$"] },
        ModelFamily.Of<Qwen2Config>("qwen2", c => new Qwen2ForCausalLM(c))
            with { BaseModelPrefix = "model", IgnoredCheckpointKeys = [@"rotary_emb\.inv_freq$", @"^lm_head\.weight$"] },
        ModelFamily.Of<Vit.ViTConfig>("vit", c => c.Architecture == Vit.ViTConfig.ImageClassification ? new Vit.ViTForImageClassification(c) : new Vit.ViTModel(c)) with { BaseModelPrefix = "vit", IgnoredCheckpointKeys = [@"^pooler\.", @"^classifier\.", @"embeddings\.mask_token$"] },
        ModelFamily.Of<ResNet.ResNetConfig>("resnet", c => c.Architecture == ResNet.ResNetConfig.ImageClassification ? new ResNet.ResNetForImageClassification(c) : new ResNet.ResNetModel(c)) with { BaseModelPrefix = "resnet", IgnoredCheckpointKeys = [@"^classifier\."] },
    ];

    public static IReadOnlyList<string> SupportedModelTypes => Families.Select(f => f.ModelType).ToList();

    // Keys transformers writes into every config.json that say nothing about the architecture.
    internal static readonly string[] Bookkeeping =
        ["model_type", "architectures", "transformers_version", "torch_dtype", "dtype", "_name_or_path", "use_cache"];

    // A family whose record models one of them (bert reads architectures to pick its head) keeps it.
    internal static string[] BookkeepingNotIn<TConfig>() => Bookkeeping.Except(ConfigJson.KnownFields<TConfig>()).ToArray();

    /// <summary>
    /// Parses a config object. Strict (our training configs): unknown fields are errors.
    /// Lenient (a Hugging Face folder): fields we don't model are skipped, as transformers keeps them as plain attributes.
    /// </summary>
    public static IModelConfig Parse(JsonNode? node, string where, bool strict)
    {
        if (node is not JsonObject obj) throw new TianGongException($"{where}: expected a JSON object, got {ConfigJson.KindOf(node)}");
        var modelType = obj["model_type"] is JsonValue v && v.TryGetValue<string>(out var name) ? name
            : throw new TianGongException($"{where}: missing 'model_type' or not a string (supported: {string.Join(", ", SupportedModelTypes)})");
        var config = FamilyOf(modelType, where).Parse(node!, where, strict);
        try
        {
            config.Validate();
        }
        catch (TianGongException e)
        {
            throw new TianGongException($"{where}: {e.Message}");
        }
        return config;
    }

    /// <summary>Like <see cref="Parse"/>, for a decoder-only language model config (what pretraining and generation take).</summary>
    public static ICausalLMConfig ParseCausalLM(JsonNode? node, string where, bool strict) =>
        Parse(node, where, strict) as ICausalLMConfig
        ?? throw new TianGongException($"{where}: model_type '{node?["model_type"]}' is not a decoder-only language model");

    public static IModelConfig Load(string configJsonPath) => Parse(ConfigJson.ReadFile(configJsonPath), configJsonPath, strict: false);

    /// <summary>The config.json transformers expects: the record's fields plus model_type, architectures and dtype.</summary>
    public static JsonObject ToJson(IModelConfig config, string dtype = "float32")
    {
        var json = new JsonObject
        {
            ["architectures"] = new JsonArray(config.Architecture),
            ["model_type"] = config.ModelType,
            ["torch_dtype"] = dtype,
        };
        foreach (var (key, value) in FamilyOf(config.ModelType, config.GetType().Name).ToJson(config)) json[key] = value?.DeepClone();
        return json;
    }

    public static void Save(IModelConfig config, string path, string dtype = "float32") =>
        ConfigJson.WriteAtomically(path, ToJson(config, dtype).ToJsonString(ConfigJson.Options));

    public static nn.Module CreateModel(IModelConfig config) => FamilyOf(config.ModelType, config.GetType().Name).Create(config);

    public static CausalLM CreateCausalLM(ICausalLMConfig config) => (CausalLM)CreateModel(config);

    public static ModelFamily FamilyOf(string modelType, string where) =>
        Families.FirstOrDefault(f => f.ModelType == modelType)
        ?? throw new TianGongException($"{where}: unsupported model_type '{modelType}' (supported: {string.Join(", ", SupportedModelTypes)})");
}
