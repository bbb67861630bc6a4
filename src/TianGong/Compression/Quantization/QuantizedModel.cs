using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Models;
using TianGong.Models.Layers;

namespace TianGong.Compression.Quantization;

/// <summary>
/// Quantizes a whole model through <see cref="LayerReplacement"/> and reads and writes GPTQ-format folders: what
/// <c>tiangong quantize</c> writes, transformers (with optimum/gptqmodel) loads, and every TianGong command loads
/// through <see cref="ModelFolder.Load(string, ScalarType?)"/>.
/// </summary>
public static class QuantizedModel
{
    private const string QWeightSuffix = ".qweight";

    /// <summary>
    /// Replaces the linear layers <paramref name="selector"/> picks (default: every one but the output head, which
    /// GPTQ checkpoints leave in float) with round-to-nearest <see cref="QuantizedLinear"/> layers. Returns their names.
    /// </summary>
    public static IReadOnlyList<string> QuantizeRtn(nn.Module model, GptqConfig config, LayerSelector? selector = null)
    {
        config.Validate();
        using var _ = no_grad();
        return LayerReplacement.Replace(model, selector ?? new LayerSelector([LayerSelector.AllLinear]),
            (_, parts) => QuantizedLinear.Rtn(parts, config));
    }

    /// <summary>
    /// The loader's hook, between building a model and reading its weights: when config.json has a
    /// quantization_config, each linear layer whose <c>qweight</c> the checkpoint holds becomes an empty
    /// <see cref="QuantizedLinear"/> of the declared format, so the packed tensors load by name like any other.
    /// </summary>
    public static void PrepareForCheckpoint(nn.Module model, JsonNode configJson, IEnumerable<string> checkpointKeys, string where)
    {
        if (GptqConfig.FromConfigJson(configJson, where) is not { } config) return;
        var quantized = checkpointKeys.Where(k => k.EndsWith(QWeightSuffix, StringComparison.Ordinal)).Select(k => k[..^QWeightSuffix.Length]).ToHashSet();
        if (quantized.Count == 0)
            throw new TianGongException($"{where}: has a quantization_config but the weights hold no '*.qweight' tensor");
        var names = LayerReplacement.LinearLayerNames(model).Where(name => quantized.Any(q => SameModule(q, name))).ToList();
        if (names.Count == 0)
            throw new TianGongException($"{where}: none of the quantized tensors ({string.Join(", ", quantized.Take(3))}, ...) is a linear layer of this model");
        LayerReplacement.Replace(model, LayerSelector.Exactly(names), (_, parts) => new QuantizedLinear(parts, config));
    }

    // A checkpoint names a module with or without the base-model prefix (model., transformer.).
    private static bool SameModule(string checkpointName, string moduleName) =>
        checkpointName == moduleName || checkpointName.EndsWith("." + moduleName, StringComparison.Ordinal) || moduleName.EndsWith("." + checkpointName, StringComparison.Ordinal);

    /// <summary>
    /// Writes a quantized model as a GPTQ folder: model.safetensors with <c>qweight</c>/<c>qzeros</c>/<c>g_idx</c> int32 and
    /// <c>scales</c> fp16, the other tensors in the model's dtype; config.json with <c>quantization_config</c>.
    /// </summary>
    public static void Save(string dir, nn.Module model, IModelConfig config, GptqConfig quantization)
    {
        Directory.CreateDirectory(dir);
        using var scope = NewDisposeScope();
        var dtype = model.parameters().First().dtype;
        var scaleKeys = Layers(model).Select(l => l.Name + ".scales").ToHashSet();
        var tensors = new Dictionary<string, Tensor>();
        foreach (var (key, value) in model.state_dict())
            tensors[key] = scaleKeys.Contains(key) ? value.to(ScalarType.Float16) : value;
        SafeTensors.Save(Path.Combine(dir, ModelFolder.WeightsFile), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        var json = ModelConfigs.ToJson(config, ModelFolder.DTypeName(dtype));
        json[GptqConfig.ConfigKey] = quantization.ToJson();
        ConfigJson.WriteAtomically(Path.Combine(dir, ModelFolder.ConfigFile), json.ToJsonString(ConfigJson.Options));
    }

    /// <summary>The quantized layers of a model, by name.</summary>
    public static IReadOnlyList<(string Name, QuantizedLinear Layer)> Layers(nn.Module model) =>
        model.named_modules().Where(m => m.module is QuantizedLinear).Select(m => (m.name, (QuantizedLinear)m.module)).ToList();
}
