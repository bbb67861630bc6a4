using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using TianGong.Checkpoints;
using TianGong.Models;

namespace TianGong.Compression.Extraction;

/// <summary>
/// Extraction on demand, by depth: a smaller model made of some of a model's blocks, in their order, written as an
/// ordinary folder whose config.json transformers loads (the layer count, and the per-layer lists some configs keep,
/// updated). Block i of the result is block <c>layers[i]</c> of the source, weights unchanged; everything outside the
/// blocks (embeddings, final norm, head) is kept. A short distillation usually recovers much of what dropping costs.
/// </summary>
public static partial class LayerExtraction
{
    // How the families' block keys are named (model.layers.3, transformer.h.3, bert.encoder.layer.3).
    [GeneratedRegex(@"^(?<head>(?:.*\.)?(?:layers|h|layer))\.(?<index>\d+)\.(?<tail>.+)$")]
    private static partial Regex BlockKey();

    /// <summary><paramref name="count"/> block indices spread evenly over <paramref name="total"/>, first and last included.</summary>
    public static IReadOnlyList<int> Evenly(int total, int count)
    {
        if (count < 1) throw new TianGongException($"--keep-layers: must be at least 1, got {count}");
        if (count > total) throw new TianGongException($"--keep-layers: the model has {total} layers, so at most {total} can be kept (got {count})");
        if (count == 1) return [0];
        return Enumerable.Range(0, count).Select(i => (int)Math.Round(i * (total - 1) / (double)(count - 1))).ToList();
    }

    /// <summary>Parses <c>0,2,4</c> into block indices.</summary>
    public static IReadOnlyList<int> ParseLayers(string text) =>
        text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
            .Select(s => int.TryParse(s, out int i) && i >= 0 ? i : throw new TianGongException($"--layers: '{s}' is not a layer index")).ToList();

    /// <summary>The number of blocks config.json declares, or an error naming a family extraction does not cover.</summary>
    public static int LayerCount(JsonNode config, string where) => Layered(config, where).LayerCount;

    /// <summary>The parsed config of a family made of numbered blocks (<see cref="ILayeredConfig"/>).</summary>
    private static ILayeredConfig Layered(JsonNode config, string where) =>
        ModelConfigs.Parse(config, where, strict: false) as ILayeredConfig
        ?? throw new TianGongException($"{where}: extraction covers " +
            string.Join(", ", ModelConfigs.Families.Where(f => typeof(ILayeredConfig).IsAssignableFrom(f.ConfigType)).Select(f => f.ModelType)) +
            $"; model_type '{(string?)config["model_type"]}' is not one of them");

    /// <summary>
    /// Writes the blocks <paramref name="layers"/> of the model in <paramref name="source"/> to <paramref name="destination"/>,
    /// with heads and MLP channels pruned as <paramref name="pruning"/> asks (see <see cref="StructuredPruning"/>);
    /// returns the pruning plan, or null when nothing was pruned.
    /// </summary>
    public static StructuredPruning? Extract(string source, string destination, IReadOnlyList<int> layers, PruningOptions? pruning = null)
    {
        var configPath = FolderFiles.Require(source, ModelFolder.ConfigFile, source, "config.json");
        var config = ConfigJson.ReadFile(configPath);
        var parsed = Layered(config, configPath);
        int total = parsed.LayerCount;
        if (layers.Count == 0) throw new TianGongException("--layers: keeping no layer would remove every layer");
        if (layers.Distinct().Count() != layers.Count) throw new TianGongException($"--layers: {string.Join(",", layers)} names a layer twice");
        if (layers.Where(i => i >= total).Cast<int?>().FirstOrDefault() is { } bad)
            throw new TianGongException($"--layers: the model has layers 0 to {total - 1}; there is no layer {bad}");
        if (config[Quantization.GptqConfig.ConfigKey] is not null)
            throw new TianGongException($"{source}: is quantized; extract from the float model, then quantize the result");
        if (Path.GetFullPath(source).TrimEnd('/') == Path.GetFullPath(destination).TrimEnd('/'))
            throw new TianGongException($"{destination}: the output folder must differ from the model folder");
        var newIndex = layers.Select((old, i) => (old, i)).ToDictionary(p => p.old, p => p.i);
        var plan = pruning is { PrunesAnything: true } ? PlanPruning(source, config, configPath, pruning) : null;

        using var loaded = ModelFolder.Load(source);
        var tensors = new Dictionary<string, Tensor>();
        foreach (var (key, value) in loaded.Module.state_dict())
        {
            var m = BlockKey().Match(key);
            if (!m.Success) tensors[key] = value;
            else if (newIndex.TryGetValue(int.Parse(m.Groups["index"].Value), out int index))
                tensors[$"{m.Groups["head"].Value}.{index}.{m.Groups["tail"].Value}"] = plan?.Slice(int.Parse(m.Groups["index"].Value), m.Groups["tail"].Value, value) ?? value;
        }
        Directory.CreateDirectory(destination);
        SafeTensors.Save(Path.Combine(destination, ModelFolder.WeightsFile), tensors, new Dictionary<string, string> { ["format"] = "pt" });

        // The new block count goes into the field the family keeps it in (num_hidden_layers, n_layer): the one that
        // differs between the record written with the old count and with the new. The rest of config.json stays as it was.
        var before = ModelConfigs.ToJson(parsed);
        foreach (var (key, value) in ModelConfigs.ToJson(parsed.WithLayerCount(layers.Count)))
            if (!JsonNode.DeepEquals(before[key], value)) config[key] = value?.DeepClone();
        // Per-layer lists (transformers v5 layer_types) follow their layers; Qwen2's max_window_layers counts the
        // kept layers below the old bound.
        if (config["layer_types"] is JsonArray types && types.Count == total)
            config["layer_types"] = new JsonArray(layers.Select(i => types[i]!.DeepClone()).ToArray());
        if (config["max_window_layers"] is JsonValue v && v.TryGetValue<int>(out int windowLayers))
            config["max_window_layers"] = layers.Count(i => i < windowLayers);
        plan?.UpdateConfig(config);
        ConfigJson.WriteAtomically(Path.Combine(destination, ModelFolder.ConfigFile), config.ToJsonString(ConfigJson.Options));
        ModelFolder.CopyCompanionFiles(source, destination);
        return plan;
    }

    /// <summary>Importance measured on the calibration text with the whole model (in float32), then the units each layer keeps.</summary>
    private static StructuredPruning PlanPruning(string source, JsonNode config, string configPath, PruningOptions pruning)
    {
        var shape = PrunableShape.Of(config, configPath);
        StructuredPruning.Counts(shape, pruning); // bad fractions fail before the model is loaded
        using var loaded = ModelFolder.Load(source, ScalarType.Float32);
        var tokenizer = loaded.Tokenizer ?? throw new TianGongException($"{source}: no tokenizer, so the --calibration text cannot be tokenized");
        var lm = loaded.AsCausalLM("extract --heads-keep/--mlp-keep");
        var tokens = tokenizer.Encode(File.ReadAllText(pruning.CalibrationFile!));
        var sequences = ImportanceScores.Sequences(tokens, Math.Min(pruning.SequenceLength, lm.Config.ContextLength), pruning.MaxSequences);
        return StructuredPruning.Plan(shape, ImportanceScores.Measure(lm, shape, sequences), pruning);
    }
}
