using System.Diagnostics;
using TianGong.Data;
using TianGong.Models;
using TorchSharp.Modules;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Training;

/// <summary>What the trainer reports after every logged step, for progress bars and tests.</summary>
public sealed record TrainingProgress(long Step, int TotalSteps, double TrainLoss, double? ValLoss, double LearningRate, double TokensPerSecond, TimeSpan Elapsed);

/// <summary>
/// The pretraining loop, top to bottom like nanoGPT's train.py:
/// for each step { lr → micro-batches (forward, backward) → clip → AdamW → log → eval → checkpoint }.
/// </summary>
public sealed class Trainer
{
    private readonly CausalLM model;
    private readonly BatchSampler sampler;
    private readonly TrainingSection cfg;
    private readonly string runDir;
    private readonly System.Text.Json.Nodes.JsonObject configJson;
    private readonly LearningRateSchedule schedule;

    public Trainer(CausalLM model, BatchSampler sampler, TrainingSection training, string runDir, System.Text.Json.Nodes.JsonObject configJson)
    {
        this.model = model;
        this.sampler = sampler;
        cfg = training;
        this.runDir = runDir;
        this.configJson = configJson;
        schedule = new LearningRateSchedule(cfg.LearningRate, cfg.MinLearningRate, cfg.WarmupSteps, cfg.MaxSteps);
    }

    /// <summary>Called after each checkpoint, so the run folder's top-level model files stay current.</summary>
    public Action<long>? OnCheckpoint { get; init; }

    /// <summary>Called after every logged step.</summary>
    public Action<TrainingProgress>? OnProgress { get; init; }

    /// <summary>
    /// Trains from step 0, or from the newest checkpoint when <paramref name="resume"/>, up to training.max_steps.
    /// Cancelling finishes the step in flight, saves a checkpoint and returns.
    /// </summary>
    public long Train(bool resume, CancellationToken cancel = default)
    {
        using var optimizer = new AdamW(model.named_parameters(), new AdamWOptions(cfg.Beta1, cfg.Beta2, cfg.Eps, cfg.WeightDecay), NoDecayNames(model));
        long step = 0, tokensSeen = 0;
        if (resume)
        {
            var state = TrainingCheckpoint.LoadLatest(runDir, model, optimizer);
            (step, tokensSeen) = (state.Step, state.TokensSeen);
        }
        var metricsPath = Path.Combine(runDir, MetricsLog.FileName);
        using var metrics = resume ? MetricsLog.Resume(metricsPath, step) : MetricsLog.Create(metricsPath);
        long tokensPerStep = (long)cfg.BatchSize * cfg.SeqLen * cfg.GradAccum;
        var clock = Stopwatch.StartNew();
        var windowClock = Stopwatch.StartNew();
        long windowTokens = 0;
        model.train();

        while (step < cfg.MaxSteps && !cancel.IsCancellationRequested)
        {
            double lr = schedule.At(step);
            double loss = TrainStep(optimizer, step, lr);
            step++;
            tokensSeen += tokensPerStep;
            windowTokens += tokensPerStep;

            bool evaluate = step % cfg.EvalInterval == 0 || step == cfg.MaxSteps;
            bool log = evaluate || step % cfg.LogInterval == 0 || step == 1;
            double tps = windowTokens / Math.Max(1e-9, windowClock.Elapsed.TotalSeconds); // training throughput: read before evaluating
            double? valLoss = evaluate ? Evaluate() : null;
            if (log)
            {
                metrics.Append(new MetricsRecord(step, loss, valLoss, valLoss is { } v ? Math.Exp(v) : null, lr, tps, clock.Elapsed.TotalSeconds));
                OnProgress?.Invoke(new TrainingProgress(step, cfg.MaxSteps, loss, valLoss, lr, tps, clock.Elapsed));
                windowClock.Restart();
                windowTokens = 0;
            }
            if (step % cfg.CheckpointInterval == 0 || step == cfg.MaxSteps || cancel.IsCancellationRequested)
                SaveCheckpoint(optimizer, step, tokensSeen);
        }
        return step;
    }

    /// <summary>One optimizer update over grad_accum micro-batches; returns the mean training loss.</summary>
    private double TrainStep(AdamW optimizer, long step, double lr)
    {
        // Dropout draws from torch's global generator: reseeding from (seed, step) makes a resumed run replay it exactly.
        manual_seed(unchecked(cfg.Seed * 1_000_003 + step));
        double total = 0;
        for (int micro = 0; micro < cfg.GradAccum; micro++)
        {
            using var scope = NewDisposeScope();
            var (input, target) = sampler.GetBatch(step * cfg.GradAccum + micro, cfg.BatchSize, cfg.SeqLen); // (B, T)
            var loss = LanguageModelLoss(model.forward(input), target) / cfg.GradAccum;
            loss.backward();
            total += loss.item<float>();
        }
        if (cfg.GradClip > 0) nn.utils.clip_grad_norm_(optimizer.Parameters, cfg.GradClip);
        optimizer.Step(lr);
        optimizer.ZeroGrad();
        return total;
    }

    /// <summary>Mean next-token cross-entropy over the validation batches (the same batches every time).</summary>
    public double Evaluate()
    {
        model.eval();
        try
        {
            using var _ = no_grad();
            // Weighted by rows: the last validation batch may be shorter than the others.
            double sum = 0;
            long rows = 0;
            foreach (var (input, target) in sampler.GetValBatches(cfg.BatchSize, cfg.SeqLen, cfg.EvalBatches))
            {
                using var scope = NewDisposeScope();
                using (input)
                using (target)
                {
                    sum += LanguageModelLoss(model.forward(input), target).item<float>() * input.shape[0];
                    rows += input.shape[0];
                }
            }
            return rows == 0 ? double.NaN : sum / rows;
        }
        finally
        {
            model.train();
        }
    }

    /// <summary>Cross-entropy of logits (B, T, V) against targets (B, T), computed in fp32 whatever the model dtype.</summary>
    public static Tensor LanguageModelLoss(Tensor logits, Tensor target) =>
        F.cross_entropy(logits.reshape(-1, logits.shape[^1]).to(ScalarType.Float32), target.reshape(-1));

    private void SaveCheckpoint(AdamW optimizer, long step, long tokensSeen)
    {
        TrainingCheckpoint.Save(runDir, model, optimizer, new TrainingCheckpoint.State(step, tokensSeen, cfg.Seed, configJson), cfg.KeepCheckpoints);
        OnCheckpoint?.Invoke(step);
    }

    /// <summary>Weight decay applies to matrices of linear layers only: not to norms, biases or embeddings (GPT-3, nanoGPT).</summary>
    public static HashSet<string> NoDecayNames(nn.Module model)
    {
        var names = new HashSet<string>();
        foreach (var (name, p) in model.named_parameters())
            if (p.dim() < 2) names.Add(name);
        foreach (var (prefix, module) in model.named_modules())
            if (module is Embedding)
                names.Add(prefix.Length == 0 ? "weight" : prefix + ".weight");
        return names;
    }
}
