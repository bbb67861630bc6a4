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
    public const string ConfigFile = CheckpointFiles.Config;
    public const string WeightsFile = CheckpointFiles.Weights;
    public const string ShardIndexFile = CheckpointFiles.ShardIndex;
    public const string TokenizerFile = CheckpointFiles.Tokenizer;
    public const string GenerationConfigFile = CheckpointFiles.GenerationConfig;

    /// <summary>
    /// Models with at least this many parameter bytes are built on the meta device (see <see cref="MetaModel"/>);
    /// smaller ones are built the ordinary way, where the random init they skip would cost next to nothing.
    /// </summary>
    public const long MetaBuildMinBytes = 64L << 20;

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
    /// in <paramref name="dtype"/> (null: the dtype <see cref="Load(string, ScalarType?)"/> picks), sharded above
    /// <paramref name="maxShardBytes"/>, and tokenizer.json and generation_config.json copied as they are. Returns the
    /// weight files written.
    /// </summary>
    public static IReadOnlyList<string> Convert(string source, string destination, ScalarType? dtype, long maxShardBytes)
    {
        if (dtype is { } asked && asked is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16))
            throw new TianGongException($"--dtype: must be float32, bfloat16 or float16, got {DTypeName(asked)}");
        if (Path.GetFullPath(source).TrimEnd(Path.DirectorySeparatorChar) == Path.GetFullPath(destination).TrimEnd(Path.DirectorySeparatorChar))
            throw new TianGongException($"{destination}: the output folder must differ from the model folder (its weights would be overwritten while read)");
        using var loaded = Load(source, dtype);
        if (Compression.Quantization.QuantizedModel.Layers(loaded.Module).Count > 0)
            throw new TianGongException($"{source}: is GPTQ-quantized; convert re-saves float models");
        Directory.CreateDirectory(destination);
        var written = ShardedSafeTensors.Save(destination, loaded.Module.state_dict(), maxShardBytes);
        ModelConfigs.Save(loaded.Config, Path.Combine(destination, ConfigFile), DTypeName(loaded.Module.parameters().First().dtype));
        CopyCompanionFiles(source, destination);
        return written;
    }

    /// <summary>
    /// Files a model folder carries beside its weights and config (tokenizer, chat template, generation defaults): a
    /// folder derived from another (converted, merged, quantized, extracted) keeps them as they are.
    /// </summary>
    public static readonly IReadOnlyList<string> CompanionFiles =
        [TokenizerLoader.TokenizerJsonFile, TokenizerLoader.TokenizerConfigFile, "special_tokens_map.json", TokenizerLoader.VocabJsonFile,
         TokenizerLoader.MergesFile, TokenizerLoader.SentencePieceFile, "chat_template.jinja", GenerationConfigFile];

    /// <summary>Copies <see cref="CompanionFiles"/> that <paramref name="source"/> has (regular files inside it only) into <paramref name="destination"/>.</summary>
    public static void CopyCompanionFiles(string source, string destination)
    {
        foreach (var file in CompanionFiles)
            if (FolderFiles.Find(source, file, source) is { } path)
                AtomicFile.Copy(path, Path.Combine(destination, file));
    }

    /// <summary>The dtype config.json declares (torch_dtype in v4, dtype in v5), or null when it names none we store.</summary>
    public static ScalarType? DeclaredDType(string dir) =>
        DeclaredDType(ConfigJson.ReadFile(FolderFiles.Require(dir, ConfigFile, dir, "config.json")));

    private static ScalarType? DeclaredDType(JsonNode config)
    {
        var name = (config["torch_dtype"] ?? config["dtype"]) is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
        return name is null or "auto" ? null : ParseDType(name, "torch_dtype");
    }

    public static ScalarType ParseDType(string name, string field) => name switch
    {
        "float32" => ScalarType.Float32,
        "bfloat16" => ScalarType.BFloat16,
        "float16" => ScalarType.Float16,
        _ => throw new TianGongException($"{field}: must be float32, bfloat16 or float16, got '{name}'"),
    };

    /// <summary>
    /// Loads a model folder. The dtype is <paramref name="dtype"/> when given, else the one config.json declares,
    /// else the weights' own (a bf16 folder loads as bf16), else float32. In order, before anything is built: the
    /// config is parsed, every weight file's header read (shard names and links checked to stay inside the folder),
    /// and the config's sizes checked against the weights' shapes; then the model is built without random init
    /// (<see cref="MetaModel"/>) when it is large, its parameters mapped from the file (or read and converted when
    /// the dtype differs). Small models are built the ordinary way and each tensor read into its parameter.
    /// </summary>
    public static LoadedModel Load(string dir, ScalarType? dtype = null) => Load(dir, dtype, buildOnMeta: null);

    /// <param name="buildOnMeta">null: by size (<see cref="MetaBuildMinBytes"/>); true/false forces the path (tests).</param>
    /// <param name="streamed">Checkpoint keys left as unpopulated views of the mapped file, in the file's dtype (Inference.Offload streams them); forces the meta path.</param>
    internal static LoadedModel Load(string dir, ScalarType? dtype, bool? buildOnMeta, Func<string, bool>? streamed = null)
    {
        if (!Directory.Exists(dir))
            throw new TianGongException(File.Exists(dir) ? $"{dir}: is a file; expected a model folder" : $"{dir}: model folder not found");
        var configPath = FolderFiles.Require(dir, ConfigFile, dir, "config.json");
        var json = ConfigJson.ReadFile(configPath);
        var config = ModelConfigs.Parse(json, configPath, strict: false);
        foreach (var name in CompanionFiles) // the tokenizer loader opens these: checked like the weights first (inside, regular, bounded)
            if (FolderFiles.Find(dir, name, dir) is { } path) FolderFiles.CheckSize(path, RegularFile.MaxJsonBytes, name);
        using var weights = CheckpointWeights.Open(dir);
        ConfigWeightChecks.Check(config, weights, configPath);
        var target = dtype ?? DeclaredDType(json) ?? weights.FloatingDType ?? ScalarType.Float32;
        if (target is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16))
            throw new TianGongException($"{configPath}: weights of dtype {DTypeName(target)} are not supported (float32, bfloat16, float16)");

        var family = ModelConfigs.FamilyOf(config.ModelType, configPath);
        var model = (streamed is not null || (buildOnMeta ?? weights.TotalBytes >= MetaBuildMinBytes)) ? MetaModel.TryBuild(() => ModelConfigs.CreateModel(config)) : null;
        if (streamed is not null && model is null)
            throw new TianGongException($"{configPath}: model_type '{config.ModelType}' cannot be built without allocating its weights, so it cannot be streamed (--max-memory)");
        bool onMeta = model is not null;
        model ??= ModelConfigs.CreateModel(config);
        try
        {
            Compression.Quantization.QuantizedModel.PrepareForCheckpoint(model, json, weights.Keys, configPath);
            var where = MatchKeys(dir, model, weights, family, config.ModelType);
            if (onMeta)
            {
                MetaModel.Materialize(model, key => (weights.FileOf(where[key]), where[key]), target, streamed is null ? null : key => streamed(where[key]));
            }
            else
            {
                if (target != ScalarType.Float32) model.to(target);
                CopyWeights(model, weights, where);
            }
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
    /// Model key → checkpoint key for every tensor of the model, after checking that the checkpoint has each one
    /// (base-model prefix added or removed) in the model's shape, and nothing the family does not expect.
    /// </summary>
    private static Dictionary<string, string> MatchKeys(string dir, nn.Module model, CheckpointWeights weights, ModelFamily family, string modelType)
    {
        var expected = model.state_dict();
        var where = new Dictionary<string, string>();
        var unexpected = new List<string>();
        foreach (var key in weights.Keys)
        {
            if (ModelKey(key, expected, family.BaseModelPrefix) is { } name) where[name] = key;
            else if (!family.IgnoredCheckpointKeys.Any(pattern => Regex.IsMatch(key, pattern))) unexpected.Add(FolderFiles.Shown(key));
        }
        var missing = expected.Keys.Where(k => !where.ContainsKey(k)).ToList();
        if (missing.Count > 0 || unexpected.Count > 0)
            throw new TianGongException($"{dir}: weights do not match config.json ({modelType})"
                + (missing.Count > 0 ? $"; missing: {string.Join(", ", missing.Take(10))}{(missing.Count > 10 ? $" (+{missing.Count - 10} more)" : "")}" : "")
                + (unexpected.Count > 0 ? $"; unexpected: {string.Join(", ", unexpected.Take(10))}{(unexpected.Count > 10 ? $" (+{unexpected.Count - 10} more)" : "")}" : ""));
        foreach (var (key, tensor) in expected)
        {
            var shape = weights.Info(where[key]).Shape;
            if (!shape.SequenceEqual(tensor.shape))
                throw new TianGongException($"{weights.FileOf(where[key]).Path}: tensor '{where[key]}' has shape [{string.Join(", ", shape)}] but the config needs [{string.Join(", ", tensor.shape)}]");
        }
        return where;
    }

    private static void CopyWeights(nn.Module model, CheckpointWeights weights, Dictionary<string, string> where)
    {
        using var _ = no_grad();
        foreach (var (key, target) in model.state_dict())
        {
            if (target.is_contiguous() && target.device_type == DeviceType.CPU)
            {
                weights.FileOf(where[key]).ReadInto(where[key], target);
                continue;
            }
            using var t = weights.FileOf(where[key]).Read(where[key]);
            target.copy_(t);
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
