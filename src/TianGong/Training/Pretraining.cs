using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Data;
using TianGong.Models;
using TianGong.Parallelism;
using TianGong.Parallelism.Pipeline;
using TianGong.Poetry;
using TianGong.Tokenizers;

namespace TianGong.Training;

/// <param name="OutDir">The run folder: a Hugging Face model folder plus checkpoints and metrics.</param>
/// <param name="MaxSteps">Overrides training.max_steps (the schedule is stretched or shrunk to it).</param>
/// <param name="InitFrom">Overrides training.init_from: a model folder whose weights, config and tokenizer start the run.</param>
/// <param name="Device">Where the model trains; the CPU when null.</param>
/// <param name="Parallel">Overrides the config's parallel section (--parallel).</param>
public sealed record PretrainOptions(string OutDir, bool Resume = false, int? MaxSteps = null, long? Seed = null, string? Home = null,
    string? InitFrom = null, Device? Device = null, ParallelConfig? Parallel = null);

/// <summary>Hooks for a front end: phase messages and per-step progress.</summary>
public sealed record PretrainCallbacks(Action<string>? Status = null, Action<TrainingProgress>? Progress = null);

/// <param name="Interrupted">True when cancellation stopped the run before training.max_steps (a checkpoint was written).</param>
public sealed record PretrainResult(string OutDir, long Steps, bool Interrupted, double? FinalValLoss, long Parameters, string MetricsPath, string LossPlotPath);

/// <summary>
/// A whole pretraining run from one config: tokenizer (trained on the corpus, cached), token shards (cached),
/// model from scratch or from a model folder (training.init_from), the generic <see cref="Trainer{TBatch}"/> with
/// next-token loss, and the model folder that <c>generate</c> and <c>score</c> read.
/// </summary>
public static class Pretraining
{
    public const string MetricsFile = MetricsLog.FileName;

    public static PretrainResult Run(PretrainConfig config, PretrainOptions options, PretrainCallbacks? callbacks = null, CancellationToken cancel = default)
    {
        callbacks ??= new PretrainCallbacks();
        var training = ApplyOverrides(config.Training, options);
        set_num_threads(training.Threads ?? Environment.ProcessorCount);
        // One process, or one rank of an MPI job: rank 0 alone writes the run folder.
        using var dist = DistributedTraining.Start(options.Parallel ?? config.Parallel, callbacks.Status, options.Device);
        var outDir = Path.GetFullPath(options.OutDir);
        TrainingCheckpoint.CheckRunFolder(outDir, options.Resume);
        dist.Barrier(); // every rank has looked at the folder before rank 0 writes into it
        var run = RunFolder.Prepare(outDir, callbacks.Status, dist.IsWriter);
        var home = options.Home ?? DatasetLocations.Home();
        var device = dist.Device; // options.Device, or this rank's GPU in a job

        var tokenizerPath = options.Resume ? Path.Combine(outDir, ModelFolder.TokenizerFile)
            : training.InitFrom is { } init ? InitTokenizerPath(init)
            : dist.RankZeroFirst(() => PrepareTokenizer(config, home, callbacks));
        var tokenizer = ByteLevelBpeTokenizer.Load(tokenizerPath);
        using var dataset = dist.RankZeroFirst(() => PrepareData(config, tokenizer, tokenizerPath, home, callbacks));
        CheckDataFits(dataset, training.SeqLen);
        var sampler = new BatchSampler(dataset, (ulong)training.Seed);

        manual_seed(training.Seed);
        // A resumed run that started from a folder rebuilds from its own copy (config.json, model.safetensors): the
        // checkpoint then overwrites the weights, and the original folder may have moved since.
        var initFrom = training.InitFrom is null ? null : options.Resume ? outDir : training.InitFrom;
        var (built, modelConfig) = BuildModel(config, training, initFrom, tokenizer);
        using var model = built;
        if (training.ScalarType != ScalarType.Float32) model.to(training.ScalarType);
        if (device.type != DeviceType.CPU) model.to(device);
        dist.SynchronizeModel(model);
        long parameterCount = model.ParameterCount();
        // With tp > 1 each rank trains its part of the whole model it just built (the same on every rank).
        var trained = dist.ShardModel(model);
        callbacks.Status?.Invoke($"model: {modelConfig.ModelType}{(training.InitFrom is { } from ? $" from {from}" : "")}, {parameterCount / 1e6:F2}M parameters; " +
                                 $"data: {dataset.TrainTokens:N0} training tokens, {dataset.ValTokens:N0} validation tokens");

        // The model folder is usable (by generate, score) from the first checkpoint on.
        var sourceJson = (JsonObject)config.Source.DeepClone();
        sourceJson["training"] = ConfigJson.ToNode(training);
        if (dist.IsWriter)
        {
            ModelConfigs.Save(modelConfig, Path.Combine(outDir, ModelFolder.ConfigFile), ModelFolder.DTypeName(training.ScalarType));
            tokenizer.Save(Path.Combine(outDir, ModelFolder.TokenizerFile));
        }
        // Pipeline stages (pp > 1) or recomputed layers run the model in parts; the forward step is next-token loss on the last part.
        using var pipeline = dist.CreatePipeline(model, NextTokenStep);

        var trainer = new Trainer<TokenBatch>(trained,
            dist.SliceBatches(new NextTokenData(sampler, training.BatchSize, training.SeqLen, training.EvalBatches, device), training.BatchSize),
            dist.NextTokenLoss(trained),
            Trainer.DecayGroups(trained, training.WeightDecay),
            dist.Context(device),
            training, outDir, sourceJson)
        {
            TokensPerStep = (long)training.BatchSize * training.SeqLen * training.GradAccum,
            Steps = pipeline,
            OnProgress = callbacks.Progress,
            OnCheckpoint = _ =>
            {
                ModelFolder.Save(outDir, trained, modelConfig, tokenizer); // inside the trainer's checkpoint: a split model saves whole
                run.SaveLossPlot();
            },
        };
        long steps = trainer.Train(options.Resume, cancel);
        dist.Barrier(); // rank 0's last checkpoint and metrics are complete before any rank reads them
        return new PretrainResult(outDir, steps, steps < training.MaxSteps, run.LastValLoss(), parameterCount, run.MetricsPath, run.LossPlotPath);
    }

    /// <summary>A pipeline's forward step: the stage's part of the model; on the last stage, the next-token loss of its logits.</summary>
    private static Tensor NextTokenStep(PipelineStage stage, Tensor input, TokenBatch batch)
    {
        var output = stage.Forward(input);
        return stage.IsLast ? LanguageModeling.Loss(output, batch.Target) : output;
    }

    /// <summary>A model from scratch (random weights from the seeded generator), or the model of training.init_from.</summary>
    private static (CausalLM Model, ICausalLMConfig Config) BuildModel(PretrainConfig config, TrainingSection training, string? initFrom, ByteLevelBpeTokenizer tokenizer)
    {
        if (initFrom is not { } dir)
        {
            var fresh = config.Model.WithTokenizer(tokenizer.VocabSize, tokenizer.BosId, tokenizer.EosId);
            var model = ModelConfigs.CreateCausalLM(fresh);
            model.InitializeWeights();
            return (model, fresh);
        }
        var loaded = ModelFolder.Load(dir, training.ScalarType);
        try
        {
            var lm = loaded.AsCausalLM("training.init_from");
            var lmConfig = lm.Config;
            if (lmConfig.VocabSize < tokenizer.VocabSize)
                throw new TianGongException($"training.init_from: {dir} has vocab_size {lmConfig.VocabSize}, smaller than its tokenizer's {tokenizer.VocabSize}");
            ConfigChecks.InRange("training.seq_len", training.SeqLen, 1, lmConfig.ContextLength);
            return (lm, lmConfig);
        }
        catch
        {
            loaded.Dispose();
            throw;
        }
    }

    /// <summary>The tokenizer.json of the init_from folder: the data must be tokenized as the model was trained.</summary>
    private static string InitTokenizerPath(string dir)
    {
        if (!Directory.Exists(dir)) throw new TianGongException($"training.init_from: model folder {dir} not found");
        var path = Path.Combine(dir, ModelFolder.TokenizerFile);
        if (!File.Exists(path))
            throw new TianGongException($"training.init_from: {dir} has no {ModelFolder.TokenizerFile} (pretraining needs the byte-level BPE tokenizer the model was trained with)");
        return path;
    }

    private static TrainingSection ApplyOverrides(TrainingSection t, PretrainOptions o) =>
        (o.InitFrom is { } init ? t with { InitFrom = init } : t).WithOverrides(o.Seed, o.MaxSteps);

    /// <summary>Fails before the first step, not at the first evaluation, when a split is shorter than one sequence.</summary>
    private static void CheckDataFits(TokenDataset dataset, int seqLen)
    {
        if (dataset.TrainTokens < seqLen + 1)
            throw new TianGongException($"{dataset.Directory}: the training split has {dataset.TrainTokens} tokens, fewer than training.seq_len + 1 ({seqLen + 1}); use a larger corpus or a shorter seq_len");
        if (dataset.ValTokens < seqLen + 1)
            throw new TianGongException($"{dataset.Directory}: the validation split has {dataset.ValTokens} tokens, fewer than training.seq_len + 1 ({seqLen + 1}); raise data.val_fraction or shorten seq_len");
    }


    private static ICorpus OpenCorpus(DataSection data, string home, PretrainCallbacks callbacks) => Corpus.Open(data.Corpus, new CorpusOptions(
        Poetry: new PoetryCorpusOptions(
            data.Collections is { Count: > 0 } c
                ? c.Select(x => Enum.Parse<PoetryCollections>(x, ignoreCase: true)).Aggregate((a, b) => a | b)
                : PoetryCollections.All,
            Enum.Parse<PoetryForm>(data.Form, ignoreCase: true)),
        Text: new TextCorpusOptions(data.JsonField),
        Home: home,
        Status: callbacks.Status));

    /// <summary>
    /// The tokenizer.json to use: tokenizer.path, or a byte-level BPE trained on the first train_megabytes of
    /// the corpus (cached, keyed by the settings that make it).
    /// </summary>
    private static string PrepareTokenizer(PretrainConfig config, string home, PretrainCallbacks callbacks)
    {
        if (config.Tokenizer.Path is { } path) return path;
        var key = Hash(config.Source["data"]?.ToJsonString() ?? "", config.Source["tokenizer"]?.ToJsonString() ?? "");
        var cached = Path.Combine(home, "cache", "tokenizers", $"{key}.json");
        if (File.Exists(cached)) return cached;

        callbacks.Status?.Invoke($"training a byte-level BPE tokenizer (vocab {config.Tokenizer.VocabSize}) on {config.Data.Corpus}");
        long budget = (long)(config.Tokenizer.TrainMegabytes * 1024 * 1024), taken = 0;
        var texts = OpenCorpus(config.Data, home, callbacks).TakeWhile(doc => (taken += Encoding.UTF8.GetByteCount(doc)) <= budget);
        var options = new BpeTrainerOptions(config.Tokenizer.VocabSize, config.Tokenizer.MinFrequency);
        if (config.Tokenizer.SpecialTokens is { Count: > 0 } specials) options = options with { SpecialTokens = specials };
        var tokenizer = ByteLevelBpeTrainer.Train(texts, options);
        Directory.CreateDirectory(Path.GetDirectoryName(cached)!);
        tokenizer.Save(cached);
        return cached;
    }

    /// <summary>Opens data.prepared, or tokenizes the corpus into shards cached under the TianGong home (keyed by the data settings and the tokenizer file).</summary>
    private static TokenDataset PrepareData(PretrainConfig config, ByteLevelBpeTokenizer tokenizer, string tokenizerPath, string home, PretrainCallbacks callbacks)
    {
        if (config.Data.Prepared is { } prepared)
        {
            var data = TokenDataset.Open(prepared);
            if (data.VocabSize != tokenizer.VocabSize || data.EosId != tokenizer.EosId)
            {
                data.Dispose();
                throw new TianGongException($"{prepared}: tokens were made with another tokenizer (vocab {data.VocabSize}, eos {data.EosId}; this run's tokenizer has vocab {tokenizer.VocabSize}, eos {tokenizer.EosId})");
            }
            return data;
        }
        var key = Hash(config.Source["data"]?.ToJsonString() ?? "", File.ReadAllText(tokenizerPath));
        var dir = Path.Combine(home, "cache", "tokens", key);
        if (File.Exists(Path.Combine(dir, "index.json"))) return TokenDataset.Open(dir);
        callbacks.Status?.Invoke($"tokenizing {config.Data.Corpus} into {dir}");
        var writer = new TokenShardWriter(new TokenShardWriterOptions(tokenizer.VocabSize, tokenizer.EosId, config.Data.ValFraction));
        writer.Write(OpenCorpus(config.Data, home, callbacks), tokenizer.Encode, dir, config.Data.Corpus);
        return TokenDataset.Open(dir);
    }

    private static string Hash(params string[] parts) =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(string.Join("\u0000", parts))))[..16];
}
