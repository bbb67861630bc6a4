using System.Text.Json.Nodes;

namespace TianGong.Compression.Quantization;

/// <summary>How weights are rounded: to nearest (RTN), or GPTQ's error-compensating order (Frantar et al. 2022).</summary>
public enum QuantizationMethod { Rtn, Gptq }

/// <summary>
/// A weight-only quantization as config.json's <c>quantization_config</c> records it in the GPTQ checkpoint format that
/// transformers, optimum and gptqmodel read: <c>{quant_method: "gptq", bits, group_size, sym, desc_act: false,
/// checkpoint_format: "gptq"}</c>. Both methods write this format; it stores integers, scales and zero points, not how
/// they were chosen. <paramref name="GroupSize"/> −1 is one group per output channel (the whole input row).
/// </summary>
public sealed record GptqConfig(int Bits, int GroupSize, bool Sym, QuantizationMethod Method = QuantizationMethod.Rtn)
{
    public const string ConfigKey = "quantization_config";

    /// <summary>The largest stored integer (2^bits − 1).</summary>
    public int MaxQ => (1 << Bits) - 1;

    /// <summary>How many values one int32 holds.</summary>
    public int PackFactor => 32 / Bits;

    /// <summary>The group size for a layer with <paramref name="inFeatures"/> inputs (−1 means all of them).</summary>
    public int GroupSizeFor(long inFeatures) => GroupSize == -1 ? (int)inFeatures : GroupSize;

    public GptqConfig Validate()
    {
        if (Bits is not (4 or 8)) throw new TianGongException($"quantization bits: must be 4 or 8, got {Bits}");
        if (GroupSize != -1 && (GroupSize < 8 || GroupSize > 1 << 16))
            throw new TianGongException($"quantization group_size: must be -1 (per output channel) or between 8 and 65536, got {GroupSize}");
        return this;
    }

    public JsonObject ToJson() => new()
    {
        ["quant_method"] = "gptq",
        ["bits"] = Bits,
        ["group_size"] = GroupSize,
        ["sym"] = Sym,
        ["desc_act"] = false,
        ["checkpoint_format"] = "gptq",
        ["pack_dtype"] = "int32",
        ["lm_head"] = false,
        ["true_sequential"] = true,
        ["damp_percent"] = 0.01,
    };

    /// <summary>The quantization config.json declares, or null for an ordinary (unquantized) folder.</summary>
    public static GptqConfig? FromConfigJson(JsonNode configJson, string where)
    {
        if (configJson[ConfigKey] is not { } node) return null;
        if (node is not JsonObject q) throw new TianGongException($"{where}: {ConfigKey} must be an object");
        var method = Text(q, "quant_method", where);
        if (method != "gptq")
            throw new TianGongException($"{where}: {ConfigKey}.quant_method '{method}' is not supported (TianGong reads gptq checkpoints)");
        if (q["checkpoint_format"] is { } format && Text(q, "checkpoint_format", where) != "gptq")
            throw new TianGongException($"{where}: {ConfigKey}.checkpoint_format '{format}' is not supported (only 'gptq', the v1 layout)");
        if (q["desc_act"] is JsonValue act && act.TryGetValue<bool>(out var descAct) && descAct)
            throw new TianGongException($"{where}: {ConfigKey}.desc_act true (activation-order g_idx) is not supported");
        var bits = Number(q, "bits", where);
        var groupSize = Number(q, "group_size", where);
        var sym = q["sym"] is JsonValue s && s.TryGetValue<bool>(out var b) ? b : true;
        try
        {
            return new GptqConfig(bits, groupSize, sym).Validate();
        }
        catch (TianGongException e)
        {
            throw new TianGongException($"{where}: {e.Message}");
        }
    }

    private static string Text(JsonObject q, string key, string where) =>
        q[key] is JsonValue v && v.TryGetValue<string>(out var s) ? s : throw new TianGongException($"{where}: {ConfigKey}.{key} must be a string");

    private static int Number(JsonObject q, string key, string where) =>
        q[key] is JsonValue v && v.TryGetValue<int>(out var n) ? n : throw new TianGongException($"{where}: {ConfigKey}.{key} must be an integer");
}
