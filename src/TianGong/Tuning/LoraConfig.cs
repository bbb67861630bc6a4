using System.Text.Json.Nodes;
using TianGong.Models.Layers;

namespace TianGong.Tuning;

/// <summary>
/// The LoRA settings TianGong trains and reads: PEFT's LoraConfig fields (adapter_config.json) that change the math.
/// Fields PEFT has but TianGong does not implement (DoRA, bias training, rank/alpha patterns, modules_to_save,
/// layers_to_transform) are refused when an adapter uses them, never silently ignored.
/// </summary>
public sealed record LoraConfig(
    int R,
    double LoraAlpha,
    LayerSelector TargetModules,
    double LoraDropout = 0.0,
    bool UseRsLora = false,
    string TaskType = "CAUSAL_LM",
    string? BaseModelNameOrPath = null)
{
    public const string FileName = "adapter_config.json";

    public void Validate()
    {
        Models.ConfigChecks.InRange("r", R, 1, 65536);
        Models.ConfigChecks.InRange("lora_alpha", LoraAlpha, 0, 1e6, minInclusive: false);
        Models.ConfigChecks.InRange("lora_dropout", LoraDropout, 0, 1, maxInclusive: false);
    }

    /// <summary>Reads a PEFT adapter_config.json (peft_type LORA).</summary>
    public static LoraConfig Read(string path)
    {
        var json = ConfigJson.ReadFile(path) as JsonObject ?? throw new TianGongException($"{path}: expected a JSON object");
        string? Text(string key) => json[key] is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
        var peftType = Text("peft_type") ?? throw new TianGongException($"{path}: missing 'peft_type'");
        if (peftType != "LORA") throw new TianGongException($"{path}: peft_type '{peftType}' is not a LoRA adapter");
        Refuse(json, path, "use_dora", v => v is JsonValue b && b.TryGetValue<bool>(out var on) && on, "DoRA adapters are not supported");
        Refuse(json, path, "bias", v => v is JsonValue b && b.TryGetValue<string>(out var s) && s != "none", "only bias 'none' is supported");
        Refuse(json, path, "lora_bias", v => v is JsonValue b && b.TryGetValue<bool>(out var on) && on, "LoRA bias vectors are not supported");
        Refuse(json, path, "modules_to_save", v => v is JsonArray { Count: > 0 }, "modules_to_save is not supported");
        Refuse(json, path, "layers_to_transform", v => v is not null, "layers_to_transform is not supported");
        Refuse(json, path, "rank_pattern", v => v is JsonObject { Count: > 0 }, "per-module ranks (rank_pattern) are not supported");
        Refuse(json, path, "alpha_pattern", v => v is JsonObject { Count: > 0 }, "per-module alphas (alpha_pattern) are not supported");
        var targets = json["target_modules"] switch
        {
            JsonValue v when v.TryGetValue<string>(out var s) => s == LayerSelector.AllLinear ? LayerSelector.Parse(s) : LayerSelector.Regex(s),
            JsonArray a => new LayerSelector(a.Select(n => n is JsonValue v && v.TryGetValue<string>(out var s) ? s
                : throw new TianGongException($"{path}: target_modules must hold module names")).ToList()),
            _ => throw new TianGongException($"{path}: target_modules must be a list of module names or a regular expression"),
        };
        double Number(string key, double fallback) => json[key] is JsonValue v && v.TryGetValue<double>(out var d) ? d : fallback;
        bool Flag(string key) => json[key] is JsonValue v && v.TryGetValue<bool>(out var b) && b;
        var config = new LoraConfig((int)Number("r", 8), Number("lora_alpha", 8), targets, Number("lora_dropout", 0), Flag("use_rslora"),
            Text("task_type") ?? "CAUSAL_LM", Text("base_model_name_or_path"));
        try { config.Validate(); }
        catch (TianGongException e) { throw new TianGongException($"{path}: {e.Message}"); }
        return config;
    }

    /// <summary>
    /// adapter_config.json as PEFT writes it. <paramref name="replaced"/> are the module names the adapter wraps: saved
    /// as PEFT's list of name suffixes when those select exactly them, else as a regular expression for exactly them.
    /// </summary>
    public JsonObject ToJson(IReadOnlyList<string> replaced, IReadOnlyList<string> allLinear, bool fanInFanOut)
    {
        var suffixes = replaced.Select(n => n[(n.LastIndexOf('.') + 1)..]).Distinct().Order(StringComparer.Ordinal).ToList();
        var bySuffix = new LayerSelector(suffixes);
        JsonNode targets = allLinear.Where(bySuffix.Matches).SequenceEqual(replaced)
            ? new JsonArray(suffixes.Select(s => (JsonNode)s).ToArray())
            : JsonValue.Create(LayerSelector.Exactly(replaced).FullMatch)!;
        return new JsonObject
        {
            ["alpha_pattern"] = new JsonObject(),
            ["base_model_name_or_path"] = BaseModelNameOrPath,
            ["bias"] = "none",
            ["fan_in_fan_out"] = fanInFanOut,
            ["inference_mode"] = true,
            ["init_lora_weights"] = true,
            ["layers_pattern"] = null,
            ["layers_to_transform"] = null,
            ["lora_alpha"] = LoraAlpha,
            ["lora_bias"] = false,
            ["lora_dropout"] = LoraDropout,
            ["modules_to_save"] = null,
            ["peft_type"] = "LORA",
            ["r"] = R,
            ["rank_pattern"] = new JsonObject(),
            ["revision"] = null,
            ["target_modules"] = targets,
            ["task_type"] = TaskType,
            ["use_dora"] = false,
            ["use_rslora"] = UseRsLora,
        };
    }

    private static void Refuse(JsonObject json, string path, string key, Func<JsonNode?, bool> used, string why)
    {
        if (json.ContainsKey(key) && used(json[key])) throw new TianGongException($"{path}: {key}: {why}");
    }
}
