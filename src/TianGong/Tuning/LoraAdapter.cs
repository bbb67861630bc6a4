using TianGong.Checkpoints;
using TianGong.Models.Layers;

namespace TianGong.Tuning;

/// <summary>
/// LoRA adapters in PEFT's folder layout (adapter_config.json + adapter_model.safetensors with keys
/// <c>base_model.model.&lt;module&gt;.lora_A.weight</c>), so adapters move between TianGong and Hugging Face PEFT both ways.
/// Injection, loading and merging all go through <see cref="LayerReplacement"/>: no family file knows about LoRA.
/// </summary>
public static class LoraAdapter
{
    public const string WeightsFile = "adapter_model.safetensors";
    private const string PeftPrefix = "base_model.model.";

    /// <summary>Wraps the selected layers in fresh LoRA layers (B = 0, so the model computes exactly as before). Returns their names.</summary>
    public static IReadOnlyList<string> Inject(nn.Module model, LoraConfig config)
    {
        config.Validate();
        return LayerReplacement.Replace(model, config.TargetModules,
            (_, parts) => new LoraLinear(parts, config.R, config.LoraAlpha, config.LoraDropout, config.UseRsLora));
    }

    /// <summary>The LoRA layers of a model, by module name.</summary>
    public static IReadOnlyList<(string Name, LoraLinear Layer)> Layers(nn.Module model) =>
        model.named_modules().Where(m => m.module is LoraLinear).Select(m => (m.name, (LoraLinear)m.module)).ToList();

    /// <summary>
    /// Reads an adapter folder (ours or PEFT's) into <paramref name="model"/>: wraps the layers its config targets and
    /// copies A and B. Every tensor of the file must find its layer with the same shape, and every layer its tensors.
    /// </summary>
    public static LoraConfig Load(nn.Module model, string dir)
    {
        if (!Directory.Exists(dir)) throw new TianGongException($"{dir}: adapter folder not found");
        var config = LoraConfig.Read(Path.Combine(dir, LoraConfig.FileName));
        var weightsPath = Path.Combine(dir, WeightsFile);
        if (!File.Exists(weightsPath))
            throw new TianGongException($"{dir}: no {WeightsFile} (only safetensors adapters are read; pickled adapter_model.bin is not)");
        Inject(model, config);
        var expected = Layers(model)
            .SelectMany(l => new[] { ($"{l.Name}.lora_A.weight", l.Layer.A), ($"{l.Name}.lora_B.weight", l.Layer.B) })
            .ToDictionary(p => p.Item1, p => p.Item2);
        using var file = SafeTensorsFile.Open(weightsPath);
        var found = new HashSet<string>();
        var unexpected = new List<string>();
        foreach (var key in file.Keys)
        {
            var name = key.StartsWith(PeftPrefix, StringComparison.Ordinal) ? key[PeftPrefix.Length..] : key;
            if (!expected.TryGetValue(name, out var target)) { unexpected.Add(key); continue; }
            var shape = file.GetInfo(key).Shape;
            if (!shape.SequenceEqual(target.shape))
                throw new TianGongException($"{weightsPath}: '{key}' has shape [{string.Join(", ", shape)}] but the model's {name} is [{string.Join(", ", target.shape)}]: the adapter was made for another base model");
            using var value = file.Read(key);
            using (no_grad()) target.copy_(value);
            found.Add(name);
        }
        var missing = expected.Keys.Where(k => !found.Contains(k)).ToList();
        if (unexpected.Count > 0 || missing.Count > 0)
            throw new TianGongException($"{weightsPath}: does not fit the model"
                + (missing.Count > 0 ? $"; missing: {string.Join(", ", missing.Take(6))}{(missing.Count > 6 ? $" (+{missing.Count - 6} more)" : "")}" : "")
                + (unexpected.Count > 0 ? $"; unexpected: {string.Join(", ", unexpected.Take(6))}{(unexpected.Count > 6 ? $" (+{unexpected.Count - 6} more)" : "")}" : ""));
        return config;
    }

    /// <summary>Writes the adapter of <paramref name="model"/> (its LoRA layers) as PEFT does: config and A/B tensors only.</summary>
    public static void Save(nn.Module model, LoraConfig config, string dir)
    {
        var layers = Layers(model);
        if (layers.Count == 0) throw new TianGongException("the model has no LoRA layers to save");
        Directory.CreateDirectory(dir);
        var tensors = new Dictionary<string, Tensor>();
        foreach (var (name, layer) in layers)
        {
            tensors[$"{PeftPrefix}{name}.lora_A.weight"] = layer.A;
            tensors[$"{PeftPrefix}{name}.lora_B.weight"] = layer.B;
        }
        SafeTensors.Save(Path.Combine(dir, WeightsFile), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        var replaced = layers.Select(l => l.Name).ToList();
        bool fanInFanOut = layers.Any(l => l.Layer.Parts.FanInFanOut);
        var json = config.ToJson(replaced, LayerReplacement.LinearLayerNames(model), fanInFanOut);
        ConfigJson.WriteAtomically(Path.Combine(dir, LoraConfig.FileName), json.ToJsonString(ConfigJson.Options) + "\n");
    }

    /// <summary>
    /// Folds every LoRA layer into its base weight (W += scaling · B A) and puts a plain layer back in its place, as
    /// PEFT's merge_and_unload: the model is then an ordinary model of its family, saved with the usual keys.
    /// </summary>
    public static IReadOnlyList<string> Merge(nn.Module model)
    {
        var layers = Layers(model);
        if (layers.Count == 0) throw new TianGongException("the model has no LoRA layers to merge");
        using (no_grad())
            foreach (var (_, layer) in layers)
            {
                using var delta = layer.DeltaWeight();
                layer.Parts.Weight.add_(delta);
            }
        return LayerReplacement.Replace(model, LayerSelector.Exactly(layers.Select(l => l.Name)), (_, parts) => Projections.FromParts(parts));
    }
}
