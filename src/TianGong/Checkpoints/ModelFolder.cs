using System.Text.RegularExpressions;
using System.Text.Json.Nodes;
using TianGong.Models;
using TianGong.Tokenizers;

namespace TianGong.Checkpoints;

/// <summary>A model loaded from a folder, with its config and the tokenizer found beside it.</summary>
public sealed record LoadedModel(nn.Module Module, IModelConfig Config, ITextTokenizer? Tokenizer, string Directory) : IDisposable
{
    /// <summary>The model as a decoder-only LM, or an error naming the command that needs one.</summary>
    public CausalLM AsCausalLM(string command) => Module as CausalLM
        ?? throw new TianGongException($"{Directory}: {command} needs a decoder-only language model, but model_type '{Config.ModelType}' is not one");

    /// <summary>The model as a bidirectional encoder, or an error naming the command that needs one.</summary>
    public IEncoderModel AsEncoder(string command) => Module as IEncoderModel
        ?? throw new TianGongException($"{Directory}: {command} needs an encoder model (bert), but model_type '{Config.ModelType}' is not one");

    /// <summary>The model as an image backbone (vit, resnet), or an error naming the command that needs one.</summary>
    public IImageEncoder AsImageEncoder(string command) => Module as IImageEncoder
        ?? throw new TianGongException($"{Directory}: {command} needs an image model (vit or resnet), but model_type '{Config.ModelType}' is not one");

    public void Dispose() => Module.Dispose();
}

/// <summary>
/// A model folder in Hugging Face layout: config.json, model.safetensors (or shards with
/// model.safetensors.index.json), tokenizer.json, generation_config.json. What we save, transformers loads as it is.
/// </summary>
public static class ModelFolder
{
    public const string ConfigFile = "config.json";
    public const string WeightsFile = "model.safetensors";
    public const string ShardIndexFile = "model.safetensors.index.json";
    public const string TokenizerFile = "tokenizer.json";
    public const string GenerationConfigFile = "generation_config.json";

    public static void Save(string dir, nn.Module model, IModelConfig config, ByteLevelBpeTokenizer? tokenizer, IReadOnlyDictionary<string, string>? metadata = null)
    {
        Directory.CreateDirectory(dir);
        var dtype = DTypeName(model.parameters().First().dtype);
        SaveWeights(Path.Combine(dir, WeightsFile), model, metadata);
        ModelConfigs.Save(config, Path.Combine(dir, ConfigFile), dtype);
        if (config is ICausalLMConfig lm) SaveGenerationConfig(Path.Combine(dir, GenerationConfigFile), lm);
        tokenizer?.Save(Path.Combine(dir, TokenizerFile));
    }

    /// <summary>The state dict as transformers names it (a tied LM head has no key of its own).</summary>
    public static void SaveWeights(string path, nn.Module model, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var meta = new Dictionary<string, string> { ["format"] = "pt" };
        foreach (var (k, v) in metadata ?? new Dictionary<string, string>()) meta[k] = v;
        SafeTensors.Save(path, model.state_dict(), meta);
    }

    /// <summary>
    /// Re-saves a model folder canonically: config.json written from the parsed config (with torch_dtype), the weights
    /// in <paramref name="dtype"/>, sharded above <paramref name="maxShardBytes"/>, and tokenizer.json and
    /// generation_config.json copied as they are. Returns the weight files written.
    /// </summary>
    public static IReadOnlyList<string> Convert(string source, string destination, ScalarType dtype, long maxShardBytes)
    {
        if (dtype is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16))
            throw new TianGongException($"--dtype: must be float32, bfloat16 or float16, got {DTypeName(dtype)}");
        if (Path.GetFullPath(source).TrimEnd(Path.DirectorySeparatorChar) == Path.GetFullPath(destination).TrimEnd(Path.DirectorySeparatorChar))
            throw new TianGongException($"{destination}: the output folder must differ from the model folder (its weights would be overwritten while read)");
        using var loaded = Load(source, dtype);
        Directory.CreateDirectory(destination);
        var written = ShardedSafeTensors.Save(destination, loaded.Module.state_dict(), maxShardBytes);
        ModelConfigs.Save(loaded.Config, Path.Combine(destination, ConfigFile), DTypeName(dtype));
        foreach (var file in new[] { TokenizerFile, GenerationConfigFile })
            if (File.Exists(Path.Combine(source, file)))
                File.Copy(Path.Combine(source, file), Path.Combine(destination, file), overwrite: true);
        return written;
    }

    /// <summary>The dtype config.json declares (torch_dtype in v4, dtype in v5), or null when it names none we store.</summary>
    public static ScalarType? DeclaredDType(string dir)
    {
        var json = ConfigJson.ReadFile(Path.Combine(dir, ConfigFile));
        var name = (json["torch_dtype"] ?? json["dtype"]) is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
        return name is null ? null : ParseDType(name, "torch_dtype");
    }

    public static ScalarType ParseDType(string name, string field) => name switch
    {
        "float32" => ScalarType.Float32,
        "bfloat16" => ScalarType.BFloat16,
        "float16" => ScalarType.Float16,
        _ => throw new TianGongException($"{field}: must be float32, bfloat16 or float16, got '{name}'"),
    };

    public static LoadedModel Load(string dir, ScalarType? dtype = null)
    {
        if (!Directory.Exists(dir)) throw new TianGongException($"{dir}: model folder not found");
        var config = ModelConfigs.Load(Path.Combine(dir, ConfigFile));
        var model = ModelConfigs.CreateModel(config);
        try
        {
            if (dtype is { } d) model.to(d);
            LoadWeights(dir, model, config.ModelType);
            model.eval();
            return new LoadedModel(model, config, TokenizerLoader.Load(dir), dir);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Copies every tensor of the folder's safetensors file(s) into the model by name. Missing and unexpected
    /// keys, and shape mismatches, are reported by name before anything is copied.
    /// </summary>
    public static void LoadWeights(string dir, nn.Module model, string modelType)
    {
        var files = WeightFiles(dir);
        var opened = files.Select(SafeTensorsFile.Open).ToList();
        try
        {
            var expected = model.state_dict();
            var family = ModelConfigs.FamilyOf(modelType, dir);
            var where = new Dictionary<string, (SafeTensorsFile File, string Key)>(); // model key → where the checkpoint holds it
            var unexpected = new List<string>();
            foreach (var f in opened)
                foreach (var key in f.Keys)
                {
                    if (ModelKey(key, expected, family.BaseModelPrefix) is { } name) where[name] = (f, key);
                    else if (!family.IgnoredCheckpointKeys.Any(pattern => Regex.IsMatch(key, pattern))) unexpected.Add(key);
                }
            var missing = expected.Keys.Where(k => !where.ContainsKey(k)).ToList();
            if (missing.Count > 0 || unexpected.Count > 0)
                throw new TianGongException($"{dir}: weights do not match config.json ({modelType})"
                    + (missing.Count > 0 ? $"; missing: {string.Join(", ", missing.Take(10))}{(missing.Count > 10 ? $" (+{missing.Count - 10} more)" : "")}" : "")
                    + (unexpected.Count > 0 ? $"; unexpected: {string.Join(", ", unexpected.Take(10))}{(unexpected.Count > 10 ? $" (+{unexpected.Count - 10} more)" : "")}" : ""));
            foreach (var (key, target) in expected)
            {
                var (file, fileKey) = where[key];
                var shape = file.GetInfo(fileKey).Shape;
                if (!shape.SequenceEqual(target.shape))
                    throw new TianGongException($"{file.Path}: tensor '{fileKey}' has shape [{string.Join(", ", shape)}] but the config needs [{string.Join(", ", target.shape)}]");
            }
            using var _ = no_grad();
            foreach (var (key, target) in expected)
            {
                var (file, fileKey) = where[key];
                using var t = file.Read(fileKey);
                target.copy_(t);
            }
        }
        finally
        {
            foreach (var f in opened) f.Dispose();
        }
    }

    /// <summary>The model's name for a checkpoint key: itself, or with the base-model prefix added or removed.</summary>
    private static string? ModelKey(string key, IReadOnlyDictionary<string, Tensor> expected, string? prefix)
    {
        if (expected.ContainsKey(key)) return key;
        if (prefix is null) return null;
        if (expected.ContainsKey($"{prefix}.{key}")) return $"{prefix}.{key}";
        return key.StartsWith(prefix + ".", StringComparison.Ordinal) && expected.ContainsKey(key[(prefix.Length + 1)..]) ? key[(prefix.Length + 1)..] : null;
    }

    private static List<string> WeightFiles(string dir)
    {
        var single = Path.Combine(dir, WeightsFile);
        if (File.Exists(single)) return [single];
        var index = Path.Combine(dir, ShardIndexFile);
        if (!File.Exists(index))
            throw new TianGongException($"{dir}: no {WeightsFile} or {ShardIndexFile} (only safetensors checkpoints are read; pickled .bin files are not)");
        var map = ConfigJson.ReadFile(index)["weight_map"] as JsonObject
            ?? throw new TianGongException($"{index}: missing 'weight_map'");
        return map.Select(kv => kv.Value?.GetValue<string>() ?? throw new TianGongException($"{index}: weight_map['{kv.Key}'] is not a file name"))
            .Distinct().Select(f => Path.Combine(dir, f)).ToList();
    }

    private static void SaveGenerationConfig(string path, ICausalLMConfig config)
    {
        var json = new JsonObject();
        if (config.BosTokenId is { } bos) json["bos_token_id"] = bos;
        if (config.EosTokenId is { } eos) json["eos_token_id"] = eos;
        json["do_sample"] = true;
        json["temperature"] = 0.8;
        json["top_k"] = 40;
        json["top_p"] = 0.95;
        json["max_new_tokens"] = 96;
        ConfigJson.WriteAtomically(path, json.ToJsonString(ConfigJson.Options));
    }

    public static string DTypeName(ScalarType t) => t switch
    {
        ScalarType.Float32 => "float32",
        ScalarType.BFloat16 => "bfloat16",
        ScalarType.Float16 => "float16",
        _ => t.ToString().ToLowerInvariant(),
    };
}
