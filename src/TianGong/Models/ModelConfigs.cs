using System.Text.Json.Nodes;
using TianGong.Models.Gpt2;
using TianGong.Models.Llama;

namespace TianGong.Models;

/// <summary>Reads and writes Hugging Face <c>config.json</c> for every supported family, and builds the matching model.</summary>
public static class ModelConfigs
{
    public static readonly IReadOnlyList<string> SupportedModelTypes = ["gpt2", "llama"];

    // Keys transformers writes into every config.json that say nothing about the architecture.
    private static readonly string[] Bookkeeping =
        ["model_type", "architectures", "transformers_version", "torch_dtype", "dtype", "_name_or_path", "use_cache"];

    /// <summary>
    /// Parses a config object. Strict (our training configs): unknown fields are errors.
    /// Lenient (a Hugging Face folder): fields we don't model are skipped, as transformers keeps them as plain attributes.
    /// </summary>
    public static ICausalLMConfig Parse(JsonNode? node, string where, bool strict)
    {
        var modelType = node?["model_type"]?.GetValue<string>()
            ?? throw new TianGongException($"{where}: missing 'model_type' (supported: {string.Join(", ", SupportedModelTypes)})");
        ICausalLMConfig config = modelType switch
        {
            "gpt2" => ConfigJson.Read<Gpt2Config>(node, where, strict, Bookkeeping),
            "llama" => ConfigJson.Read<LlamaConfig>(node, where, strict, Bookkeeping),
            _ => throw new TianGongException($"{where}: unsupported model_type '{modelType}' (supported: {string.Join(", ", SupportedModelTypes)})"),
        };
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

    public static ICausalLMConfig Load(string configJsonPath) => Parse(ConfigJson.ReadFile(configJsonPath), configJsonPath, strict: false);

    /// <summary>The config.json transformers expects: the record's fields plus model_type, architectures and dtype.</summary>
    public static JsonObject ToJson(ICausalLMConfig config, string dtype = "float32")
    {
        var node = config switch
        {
            Gpt2Config g => ConfigJson.ToNode(g),
            LlamaConfig l => ConfigJson.ToNode(l),
            _ => throw new ArgumentException($"no JSON writer for {config.GetType().Name}"),
        };
        var json = new JsonObject
        {
            ["architectures"] = new JsonArray(config.Architecture),
            ["model_type"] = config.ModelType,
            ["torch_dtype"] = dtype,
        };
        foreach (var (key, value) in node) json[key] = value?.DeepClone();
        return json;
    }

    public static void Save(ICausalLMConfig config, string path, string dtype = "float32") =>
        ConfigJson.WriteAtomically(path, ToJson(config, dtype).ToJsonString(ConfigJson.Options));

    public static CausalLM CreateModel(ICausalLMConfig config) => config switch
    {
        Gpt2Config g => new Gpt2LMHeadModel(g),
        LlamaConfig l => new LlamaForCausalLM(l),
        _ => throw new ArgumentException($"no model for {config.GetType().Name}"),
    };
}
