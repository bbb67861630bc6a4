using System.Diagnostics;
using System.Text.Json.Nodes;
using TianGong.Parallelism.Pipeline;
using TianGong.Models.Layers;
using TorchSharp.Modules;

namespace TianGong.Training;

/// <summary>What the trainer reports after every logged step, for progress bars and tests.</summary>
public sealed record TrainingProgress(long Step, int TotalSteps, double TrainLoss, double? ValLoss, double LearningRate, double TokensPerSecond, TimeSpan Elapsed,
    IReadOnlyDictionary<string, double>? Metrics = null);

/// <summary>
/// The training loop for every kind of training, top to bottom like nanoGPT's train.py:
/// for each step { lr → micro-batches (forward, loss, backward) → gradient sync → clip → AdamW → log → eval → checkpoint }.
/// What is trained is decided by its arguments: the model, the batches, the loss function and the optimizer's
/// parameter groups (frozen parameters are in no group); where, by the parallel context. Pretraining is one use
/// (<see cref="Pretraining"/>: token windows and next-token loss).
/// </summary>
public sealed class Trainer<TBatch>
{
    private readonly nn.Module model;
    private readonly ITrainingData<TBatch> data;
    private readonly LossFunction<TBatch> lossFunction;
    private readonly IReadOnlyList<ParameterGroup> parameterGroups;
    private readonly ParallelContext parallel;
    private readonly TrainingSection cfg;
    private readonly string runDir;
    private readonly JsonObject configJson;
    private readonly LearningRateSchedule schedule;

    /// <param name="model">The module being trained, already on <see cref="ParallelContext.Device"/>.</param>
    /// <param name="runDir">Where checkpoints and metrics.jsonl go.</param>
    /// <param name="configJson">The run's config, stored in every checkpoint.</param>
    public Trainer(nn.Module model, ITrainingData<TBatch> data, LossFunction<TBatch> lossFunction, IReadOnlyList<ParameterGroup> parameterGroups,
        ParallelContext parallel, TrainingSection training, string runDir, JsonObject configJson)
    {
        this.model = model;
        this.data = data;
        this.lossFunction = lossFunction;
        this.parameterGroups = parameterGroups;
        this.parallel = parallel;
        cfg = training;
        this.runDir = runDir;
        this.configJson = configJson;
        schedule = new LearningRateSchedule(cfg.LearningRate, cfg.MinLearningRate, cfg.WarmupSteps, cfg.MaxSteps);
    }

    /// <summary>Called after each checkpoint, so the run folder's top-level model files stay current.</summary>
    public Action<long>? OnCheckpoint { get; init; }

    /// <summary>Called before every update with its step number (progressive unfreezing changes what trains here).</summary>
    public Action<long>? OnStepStart { get; init; }

    /// <summary>Called after every logged step.</summary>
    public Action<TrainingProgress>? OnProgress { get; init; }

    /// <summary>Runs each step's forward and backward instead of the loop below (pipeline stages, recomputation); null: the loss function on the whole model.</summary>
    public IStepRunner<TBatch>? Steps { get; init; }

    /// <summary>Tokens one update consumes, for the tokens/s figure (batch × sequence × accumulation for language models).</summary>
    public long TokensPerStep { get; init; }

    /// <summary>
    /// Trains from step 0, or from the newest checkpoint when <paramref name="resume"/>, up to training.max_steps.
    /// Cancelling finishes the step in flight, saves a checkpoint and returns.
    /// </summary>
    public long Train(bool resume, CancellationToken cancel = default)
    {
        var adamW = new AdamWOptions(cfg.Beta1, cfg.Beta2, cfg.Eps, cfg.WeightDecay);
        using var optimizer = parallel.CreateOptimizer?.Invoke(parameterGroups, adamW) ?? new AdamW(parameterGroups, adamW);
        var trained = TrainedInModelOrder(optimizer);
        long step = 0, tokensSeen = 0;
        if (resume)
        {
            using var whole = parallel.WholeModelState?.Invoke(); // a model split across ranks loads as the whole one
            var state = TrainingCheckpoint.LoadLatest(runDir, model, optimizer);
            (step, tokensSeen) = (state.Step, state.TokensSeen);
        }
        var metricsPath = Path.Combine(runDir, MetricsLog.FileName);
        using var metrics = !parallel.IsWriter ? null : resume ? MetricsLog.Resume(metricsPath, step) : MetricsLog.Create(metricsPath);
        var clock = Stopwatch.StartNew();
        var windowClock = Stopwatch.StartNew();
        long windowTokens = 0;
        model.train();

        bool stopping = Stopping(cancel);
        while (step < cfg.MaxSteps && !stopping)
        {
            double lr = schedule.At(step);
            OnStepStart?.Invoke(step);
            var (loss, stepMetrics) = TrainStep(optimizer, trained, step, lr);
            step++;
            tokensSeen += TokensPerStep;
            windowTokens += TokensPerStep;

            bool evaluate = step % cfg.EvalInterval == 0 || step == cfg.MaxSteps;
            bool log = evaluate || step % cfg.LogInterval == 0 || step == 1;
            double tps = windowTokens / Math.Max(1e-9, windowClock.Elapsed.TotalSeconds); // training throughput: read before evaluating
            double? valLoss = evaluate ? Evaluate() : null;
            if (log && metrics is not null)
            {
                metrics.Append(new MetricsRecord(step, loss, valLoss, valLoss is { } v ? Math.Exp(v) : null, lr, tps, clock.Elapsed.TotalSeconds, stepMetrics));
                OnProgress?.Invoke(new TrainingProgress(step, cfg.MaxSteps, loss, valLoss, lr, tps, clock.Elapsed, stepMetrics));
                windowClock.Restart();
                windowTokens = 0;
            }
            stopping = Stopping(cancel);
            if (step % cfg.CheckpointInterval == 0 || step == cfg.MaxSteps || stopping)
            {
                using var whole = parallel.WholeModelState?.Invoke(); // a model split across ranks saves as the whole one
                Steps?.BeforeCheckpoint(); // every rank: the other pipeline stages' weights reach rank 0
                if (parallel.IsWriter) SaveCheckpoint(optimizer, step, tokensSeen);
                else if (parallel.CreateOptimizer is not null) optimizer.StateDict(); // a sharded optimizer gathers its state: every rank takes part
            }
        }
        return step;
    }

    /// <summary>Whether to stop after this step: with several processes, all stop together when any was cancelled (else one would wait forever for the others).</summary>
    private bool Stopping(CancellationToken cancel) =>
        parallel.AnyRank?.Invoke(cancel.IsCancellationRequested) ?? cancel.IsCancellationRequested;

    /// <summary>One optimizer update over grad_accum micro-batches; returns the mean training loss and metrics.</summary>
    private (double Loss, IReadOnlyDictionary<string, double>? Metrics) TrainStep(IOptimizer optimizer, IReadOnlyList<Parameter> trained, long step, double lr)
    {
        // Dropout draws from the rank's generator: reseeding it from (seed, step) makes a resumed run replay it exactly.
        parallel.SeedStep(cfg.Seed, step);
        double total = 0;
        Dictionary<string, double>? metricSums = null;
        // The loss and metrics stay on the device until the update is queued: reading them right after backward made
        // the host wait for the GPU there, and the GPU then idled while the host queued the optimizer's small kernels.
        var pending = new List<(string? Metric, Tensor Value)>();
        try
        {
            if (Steps is not null)
            {
                using var scope = NewDisposeScope();
                total = Steps.ForwardBackward(Enumerable.Range(0, cfg.GradAccum).Select(micro => data.TrainBatch(step * cfg.GradAccum + micro)).ToList());
            }
            for (int micro = 0; Steps is null && micro < cfg.GradAccum; micro++)
            {
                using var scope = NewDisposeScope();
                var batch = data.TrainBatch(step * cfg.GradAccum + micro);
                var record = lossFunction(model, batch);
                var loss = record.Loss / cfg.GradAccum;
                loss.backward();
                pending.Add((null, loss.detach().DetachFromDisposeScope()));
                foreach (var (name, value) in record.Metrics ?? new Dictionary<string, Tensor>())
                    pending.Add((name, value.detach().DetachFromDisposeScope()));
            }
            parallel.SyncGradients?.Invoke(trained);
            if (cfg.GradClip > 0)
            {
                if (parallel.ClipGradients is { } clip) clip(trained, cfg.GradClip);
                else GradientClipping.ClipGlobalNorm(trained, cfg.GradClip);
            }
            optimizer.Step(lr);
            optimizer.ZeroGrad();
            foreach (var (metric, value) in pending)
            {
                if (metric is null) total += value.item<float>();
                else (metricSums ??= [])[metric] = metricSums.GetValueOrDefault(metric) + value.item<float>() / cfg.GradAccum;
            }
        }
        finally
        {
            foreach (var (_, value) in pending) value.Dispose();
        }
        if (parallel.AverageOverRanks is { } average)
        {
            total = average(total);
            foreach (var name in metricSums?.Keys.ToList() ?? []) metricSums![name] = average(metricSums[name]);
        }
        return (total, metricSums);
    }

    /// <summary>Mean validation loss over the validation batches (the same batches every time), weighted by examples.</summary>
    public double Evaluate()
    {
        model.eval();
        try
        {
            using var _ = no_grad();
            double sum = 0;
            long examples = 0;
            foreach (var batch in data.ValidationBatches())
            {
                using var scope = NewDisposeScope();
                try
                {
                    if (Steps is not null)
                    {
                        var (loss, count) = Steps.Evaluate(batch);
                        sum += loss * count;
                        examples += count;
                        continue;
                    }
                    var record = lossFunction(model, batch);
                    sum += record.Loss.item<float>() * record.Examples;
                    examples += record.Examples;
                }
                finally
                {
                    (batch as IDisposable)?.Dispose(); // made before the scope, so not in it
                }
            }
            return examples == 0 ? double.NaN : sum / examples;
        }
        finally
        {
            model.train();
        }
    }

    /// <summary>
    /// The optimizer's parameters in the model's own order: gradient clipping sums the norms in this order, so the
    /// order of the groups (decayed first, then not) cannot change the numbers.
    /// </summary>
    private IReadOnlyList<Parameter> TrainedInModelOrder(IOptimizer optimizer)
    {
        var trained = optimizer.Parameters.ToHashSet(ReferenceEqualityComparer.Instance);
        return model.parameters().Where(p => trained.Contains(p)).ToList();
    }

    private void SaveCheckpoint(IOptimizer optimizer, long step, long tokensSeen)
    {
        try
        {
            TrainingCheckpoint.Save(runDir, model, optimizer, new TrainingCheckpoint.State(step, tokensSeen, cfg.Seed, configJson), cfg.KeepCheckpoints);
        }
        catch (IOException e) when (DiskFull.Is(e))
        {
            throw new TianGongException($"{runDir}: checkpoint at step {step} not written: no space left on device; {LatestCheckpoint()}", e);
        }
        try
        {
            OnCheckpoint?.Invoke(step);
        }
        catch (IOException e) when (DiskFull.Is(e))
        {
            throw new TianGongException($"{runDir}: no space left on device while updating the run folder after step {step}; {LatestCheckpoint()}", e);
        }
    }

    /// <summary>What a failed save leaves to resume from, for its error message.</summary>
    private string LatestCheckpoint() => TrainingCheckpoint.List(runDir) is [.., var (_, dir)]
        ? $"the latest complete checkpoint ({Path.GetFileName(dir)}) is intact; free space and pass --resume"
        : "no complete checkpoint exists yet";
}

/// <summary>Helpers every kind of training shares.</summary>
public static class Trainer
{
    /// <summary>Weight decay applies to matrices of linear layers only: not to norms, biases or embeddings (GPT-3, nanoGPT).</summary>
    public static HashSet<string> NoDecayNames(nn.Module model)
    {
        var names = new HashSet<string>();
        foreach (var (name, p) in model.named_parameters())
            if (p.dim() < 2) names.Add(name);
        foreach (var (prefix, module) in model.named_modules())
            if (module is Embedding or EmbeddingTable)
                names.Add(prefix.Length == 0 ? "weight" : prefix + ".weight");
        return names;
    }

    /// <summary>
    /// The usual two groups over the parameters that require grad (frozen ones are left out): matrices with
    /// <paramref name="weightDecay"/>, and norms, biases and embeddings without.
    /// </summary>
    public static IReadOnlyList<ParameterGroup> DecayGroups(nn.Module model, double weightDecay)
    {
        var noDecay = NoDecayNames(model);
        var trainable = model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => (p.name, p.parameter)).ToList();
        return
        [
            new ParameterGroup(trainable.Where(p => !noDecay.Contains(p.name)).ToList(), weightDecay),
            new ParameterGroup(trainable.Where(p => noDecay.Contains(p.name)).ToList(), 0),
        ];
    }
}

/// <summary>Recognises "no space left on device" across platforms.</summary>
internal static class DiskFull
{
    private const int Enospc = 28; // Linux and macOS errno, which .NET puts in HResult on Unix
    private const int ErrorDiskFull = unchecked((int)0x80070070), ErrorHandleDiskFull = unchecked((int)0x80070027);

    public static bool Is(IOException e) => e.HResult is Enospc or ErrorDiskFull or ErrorHandleDiskFull ||
        e.Message.Contains("No space left on device", StringComparison.OrdinalIgnoreCase);
}
