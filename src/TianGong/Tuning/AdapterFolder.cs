using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Models;

namespace TianGong.Tuning;

/// <summary>
/// What the <c>--adapter DIR</c> option of every model-taking command does: read the folder's adapter_config.json and
/// apply it by its peft_type (LORA: wrap the target layers; PROMPT_TUNING: put the soft prompt in front;
/// PREFIX_TUNING: put the prefix keys and values in front of every layer), so that the
/// command then runs the adapted model as it would the base. Also writes plain model folders (full fine-tuning, merge).
/// </summary>
public static class AdapterFolder
{
    /// <summary>The adapter of <paramref name="dir"/> applied to <paramref name="loaded"/>; the returned model replaces it (same tokenizer and config).</summary>
    public static LoadedModel Apply(LoadedModel loaded, string dir)
    {
        var path = Path.Combine(dir, LoraConfig.FileName);
        if (!Directory.Exists(dir)) throw new TianGongException($"{dir}: adapter folder not found");
        if (!File.Exists(path)) throw new TianGongException($"{dir}: no {LoraConfig.FileName}; not an adapter folder");
        var json = ConfigJson.ReadFile(path) as JsonObject ?? throw new TianGongException($"{path}: expected a JSON object");
        var peftType = json["peft_type"] is JsonValue v && v.TryGetValue<string>(out var s) ? s : throw new TianGongException($"{path}: missing 'peft_type'");
        switch (peftType)
        {
            case "LORA":
                LoraAdapter.Load(loaded.Module, dir);
                return loaded;
            case PromptTuningConfig.PeftType:
                var lm = loaded.Module as CausalLM ?? throw new TianGongException($"{path}: a PROMPT_TUNING adapter needs a decoder-only model; {loaded.Directory} is {loaded.Config.ModelType}");
                return loaded with { Module = PromptTuningConfig.Load(lm, dir, json) };
            case PrefixTuningConfig.PeftType:
                var decoder = loaded.Module as CausalLM ?? throw new TianGongException($"{path}: a PREFIX_TUNING adapter needs a decoder-only model; {loaded.Directory} is {loaded.Config.ModelType}");
                return loaded with { Module = PrefixTuningConfig.Load(decoder, dir, json) };
            default:
                throw new TianGongException($"{path}: peft_type '{peftType}' is not supported (LORA, PROMPT_TUNING, PREFIX_TUNING)");
        }
    }

    /// <summary>A plain model folder: the weights of <paramref name="model"/>, its config, and the companion files of <paramref name="sourceDir"/>.</summary>
    public static void SavePlainModel(string sourceDir, string targetDir, nn.Module model, IModelConfig config)
    {
        Directory.CreateDirectory(targetDir);
        var dtype = model.parameters().First().dtype;
        ModelFolder.SaveWeights(Path.Combine(targetDir, ModelFolder.WeightsFile), model);
        ModelConfigs.Save(config, Path.Combine(targetDir, ModelFolder.ConfigFile), ModelFolder.DTypeName(dtype));
        ModelFolder.CopyCompanionFiles(sourceDir, targetDir);
    }
}
