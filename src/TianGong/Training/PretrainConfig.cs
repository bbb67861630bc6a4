using System.Text.Json.Nodes;
using TianGong.Models;

namespace TianGong.Training;

/// <summary>How the tokenizer is made: trained on the corpus (vocab_size), or read from an existing tokenizer.json (path).</summary>
public sealed record TokenizerSection(
    int VocabSize = 4096,
    int MinFrequency = 2,
    string? Path = null,
    IReadOnlyList<string>? SpecialTokens = null,
    double TrainMegabytes = 20)
{
    public void Validate(string where)
    {
        if (Path is null) ConfigChecks.InRange($"{where}.vocab_size", VocabSize, 257, 1 << 20);
        ConfigChecks.InRange($"{where}.min_frequency", MinFrequency, 1, int.MaxValue);
        ConfigChecks.InRange($"{where}.train_megabytes", TrainMegabytes, 0, 100_000, minInclusive: false);
    }
}

/// <summary>Which corpus to pretrain on: "chinese-poetry" or a path to text/JSONL, or token shards made by <c>tiangong data prepare</c>.</summary>
public sealed record DataSection(
    string Corpus = "chinese-poetry",
    IReadOnlyList<string>? Collections = null,
    string Form = "any",
    string? Prepared = null,
    double ValFraction = 0.01,
    string JsonField = "text")
{
    public void Validate(string where)
    {
        ConfigChecks.OneOf($"{where}.form", Form, "any", "jueju", "lushi");
        ConfigChecks.InRange($"{where}.val_fraction", ValFraction, 0, 0.5, minInclusive: false);
        foreach (var c in Collections ?? [])
            ConfigChecks.OneOf($"{where}.collections[]", c, "tang", "song", "ci");
    }
}

/// <param name="InitFrom">A model folder to start from (its config, weights and tokenizer) instead of random weights; the model section is then not used.</param>
public sealed record TrainingSection(
    int SeqLen = 128,
    int BatchSize = 16,
    int GradAccum = 1,
    int MaxSteps = 400,
    double LearningRate = 3e-3,
    double MinLearningRate = 3e-4,
    int WarmupSteps = 40,
    double WeightDecay = 0.1,
    double Beta1 = 0.9,
    double Beta2 = 0.95,
    double Eps = 1e-8,
    double GradClip = 1.0,
    int EvalInterval = 50,
    int EvalBatches = 8,
    int LogInterval = 10,
    int CheckpointInterval = 100,
    int KeepCheckpoints = 2,
    string Dtype = "float32",
    long Seed = 1337,
    int? Threads = null,
    string? InitFrom = null)
{
    /// <summary>
    /// The command line's --seed and --max-steps laid over the config: a shorter or longer run stretches the schedule
    /// to it, keeping warmup within a tenth of the run.
    /// </summary>
    public TrainingSection WithOverrides(long? seed, int? maxSteps)
    {
        var t = this;
        if (seed is { } s) t = t with { Seed = s };
        if (maxSteps is { } steps)
        {
            if (steps < 1) throw new TianGongException($"--max-steps: must be at least 1, got {steps}");
            t = t with { MaxSteps = steps, WarmupSteps = Math.Min(t.WarmupSteps, Math.Max(1, steps / 10)) };
        }
        return t;
    }

    public void Validate(string where, int contextLength)
    {
        ConfigChecks.InRange($"{where}.seq_len", SeqLen, 1, contextLength);
        ConfigChecks.InRange($"{where}.batch_size", BatchSize, 1, 1 << 16);
        ConfigChecks.InRange($"{where}.grad_accum", GradAccum, 1, 1 << 16);
        ConfigChecks.InRange($"{where}.max_steps", MaxSteps, 1, int.MaxValue);
        ConfigChecks.InRange($"{where}.learning_rate", LearningRate, 0, 1, minInclusive: false);
        ConfigChecks.InRange($"{where}.min_learning_rate", MinLearningRate, 0, LearningRate);
        ConfigChecks.InRange($"{where}.warmup_steps", WarmupSteps, 0, MaxSteps);
        ConfigChecks.InRange($"{where}.weight_decay", WeightDecay, 0, 1);
        ConfigChecks.InRange($"{where}.beta1", Beta1, 0, 1, maxInclusive: false);
        ConfigChecks.InRange($"{where}.beta2", Beta2, 0, 1, maxInclusive: false);
        ConfigChecks.InRange($"{where}.eps", Eps, 0, 1, minInclusive: false);
        ConfigChecks.InRange($"{where}.grad_clip", GradClip, 0, 1e6);
        ConfigChecks.InRange($"{where}.eval_interval", EvalInterval, 1, int.MaxValue);
        ConfigChecks.InRange($"{where}.eval_batches", EvalBatches, 1, 1 << 20);
        ConfigChecks.InRange($"{where}.log_interval", LogInterval, 1, int.MaxValue);
        ConfigChecks.InRange($"{where}.checkpoint_interval", CheckpointInterval, 1, int.MaxValue);
        ConfigChecks.InRange($"{where}.keep_checkpoints", KeepCheckpoints, 1, 1000);
        ConfigChecks.OneOf($"{where}.dtype", Dtype, "float32", "bfloat16");
        if (Threads is { } t) ConfigChecks.InRange($"{where}.threads", t, 1, 1024);
        if (InitFrom is { } init && string.IsNullOrWhiteSpace(init))
            throw new TianGongException($"{where}.init_from: must be a model folder path (or left out to start from random weights)");
    }

    public ScalarType ScalarType => Dtype == "bfloat16" ? ScalarType.BFloat16 : ScalarType.Float32;
}

/// <summary>What the demo prints after training: poems for each title, then one acrostic poem.</summary>
public sealed record GenerationSection(
    IReadOnlyList<string>? Titles = null,
    string? Acrostic = null,
    int MaxNewTokens = 96,
    double Temperature = 0.8,
    int TopK = 40,
    double TopP = 0.95,
    double RepetitionPenalty = 1.1,
    long Seed = 7,
    int MinNewTokens = 0);

/// <summary>
/// A pretraining run in one JSON file (configs/*.json): the model (a Hugging Face config.json object with
/// model_type), the tokenizer, the data, the optimisation and what to generate afterwards.
/// Read strictly: an unknown or out-of-range field is an error that names it.
/// </summary>
public sealed record PretrainConfig(
    ICausalLMConfig Model,
    TokenizerSection Tokenizer,
    DataSection Data,
    TrainingSection Training,
    GenerationSection Generation,
    JsonObject Source)
{
    private static readonly string[] Sections = ["model", "tokenizer", "data", "training", "generation", "parallel"];

    /// <summary>How the run is spread over processes (the <c>parallel</c> section); one process when absent.</summary>
    public TianGong.Parallelism.ParallelConfig Parallel { get; init; } = TianGong.Parallelism.ParallelConfig.Single;

    public static PretrainConfig Load(string path) => Parse(ConfigJson.ReadFile(path), path);

    public static PretrainConfig Parse(JsonNode root, string path)
    {
        if (root is not JsonObject obj) throw new TianGongException($"{path}: expected a JSON object");
        foreach (var (key, _) in obj)
            if (!Sections.Contains(key))
                throw new TianGongException($"{path}: unknown section '{key}' (known sections: {string.Join(", ", Sections)})");
        if (obj["model"] is null) throw new TianGongException($"{path}: missing section 'model'");

        // The tokenizer decides vocab_size and the bos/eos ids, so the model section may leave them out.
        var modelNode = (JsonObject)obj["model"]!.DeepClone();
        modelNode.TryAdd("vocab_size", 65536);
        var model = ModelConfigs.ParseCausalLM(modelNode, $"{path}: model", strict: true);
        var tokenizer = Section<TokenizerSection>(obj, "tokenizer", path);
        var data = Section<DataSection>(obj, "data", path);
        var training = Section<TrainingSection>(obj, "training", path);
        var generation = Section<GenerationSection>(obj, "generation", path);
        tokenizer.Validate($"{path}: tokenizer");
        data.Validate($"{path}: data");
        training.Validate($"{path}: training", model.ContextLength);
        return new PretrainConfig(model, tokenizer, data, training, generation, obj)
        {
            Parallel = TianGong.Parallelism.ParallelConfig.FromJson(obj["parallel"], $"{path}: parallel"),
        };
    }

    private static T Section<T>(JsonObject root, string name, string path) =>
        ConfigJson.Read<T>(root[name] ?? new JsonObject(), $"{path}: {name}", strict: true);
}
