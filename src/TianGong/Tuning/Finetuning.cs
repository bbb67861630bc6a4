using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Data;
using TianGong.Models;
using TianGong.Tokenizers;
using TianGong.Training;
using TianGong.Tuning.Data;

namespace TianGong.Tuning;

public enum FinetuneMethod { Full, Lora, Unfreeze, Prompt, PtuningV2 }

public enum FinetuneTask { Lm, Sft, Classify }

/// <summary>The command-line names of the methods (<c>ptuning-v2</c> is not a C# identifier).</summary>
public static class FinetuneMethodNames
{
    public static string Name(this FinetuneMethod method) => method == FinetuneMethod.PtuningV2 ? "ptuning-v2" : method.ToString().ToLowerInvariant();

    public static IReadOnlyList<string> All => Enum.GetValues<FinetuneMethod>().Select(Name).ToList();

    public static FinetuneMethod Parse(string text) =>
        Enum.GetValues<FinetuneMethod>().FirstOrDefault(m => m.Name() == text.ToLowerInvariant(), (FinetuneMethod)(-1)) is var m && m >= 0
            ? m : throw new TianGongException($"--method: '{text}' is not one of {string.Join(", ", All)}");
}

/// <summary>Prompt-based classification settings (see <see cref="PromptClassifier"/>).</summary>
/// <param name="Shots">Training rows per label, drawn by the seed; 0 trains on every row.</param>
public sealed record ClassifyOptions(string Template, IReadOnlyDictionary<string, string> Verbalizer, int Shots = 0, int MaxTextTokens = 200);

/// <param name="ModelDir">The pretrained model folder (ours or Hugging Face's).</param>
/// <param name="Data">lm: <c>chinese-poetry</c> or a text/JSONL file; sft: a chat JSONL file; classify: a text/label JSONL file.</param>
/// <param name="EvalData">sft, classify: a file of the same kind to validate on; default: a seeded tenth of the training rows.</param>
/// <param name="Training">Steps, batch, rates, intervals: the pretraining section's fields (seq_len cut to the model's context).</param>
public sealed record FinetuneOptions(
    string ModelDir,
    string OutDir,
    FinetuneMethod Method,
    FinetuneTask Task,
    string Data,
    TrainingSection Training,
    LoraConfig? Lora = null,
    UnfreezeOptions? Unfreeze = null,
    PromptTuningConfig? Prompt = null,
    ClassifyOptions? Classify = null,
    string? EvalData = null,
    IReadOnlyList<string>? Collections = null,
    bool Resume = false,
    string? Home = null,
    Device? Device = null,
    PrefixTuningConfig? Prefix = null,
    bool ClassificationHead = false);

/// <param name="TrainableParameters">Parameters the optimizer updates (all of them for unfreezing, over the run).</param>
public sealed record FinetuneResult(string OutDir, long Steps, bool Interrupted, double? FinalValLoss, long Parameters, long TrainableParameters,
    string MetricsPath, string LossPlotPath, string Output);

/// <summary>
/// Adapting a pretrained model: load the folder, choose what trains (everything; LoRA adapters; a soft prompt; the
/// top layers first, unfrozen downward on a schedule), build the task's batches (token windows for lm; whole
/// conversations with loss on assistant tokens for sft), and run the generic <see cref="Trainer{TBatch}"/> with
/// next-token loss. The run folder holds metrics.jsonl, loss.png and checkpoint-N as pretraining's does, and is
/// itself the result: a PEFT adapter folder (LoRA, prompt tuning) or a plain model folder (full, unfreeze).
/// </summary>
public static class Finetuning
{
    public static FinetuneResult Run(FinetuneOptions options, PretrainCallbacks? callbacks = null, CancellationToken cancel = default)
    {
        callbacks ??= new PretrainCallbacks();
        if (options.ClassificationHead && (options.Task != FinetuneTask.Classify || options.Method != FinetuneMethod.Full))
            throw new TianGongException("--classification-head: only with --task classify and --method full (the whole network and the head train)");
        var training = options.Training;
        set_num_threads(training.Threads ?? Environment.ProcessorCount);
        var outDir = Path.GetFullPath(options.OutDir);
        if (Path.GetFullPath(options.ModelDir).TrimEnd('/') == outDir.TrimEnd('/'))
            throw new TianGongException($"{options.OutDir}: the output folder must differ from the model folder");
        TrainingCheckpoint.CheckRunFolder(outDir, options.Resume);
        var device = options.Device ?? CPU;
        var home = options.Home ?? DatasetLocations.Home();

        if (TaskSets.IsTask(options.Data))
        {
            // A named task: lm continues pretraining on its unlabeled training texts, classify learns from its labeled training rows.
            var task = TaskSets.Ensure(options.Data, home, callbacks.Status);
            options = options with { Data = options.Task == FinetuneTask.Lm ? task.Unlabeled : task.Train };
        }
        bool builtInInstructions = options.Data == PoetryInstructions.Name;
        if (builtInInstructions)
        {
            if (options.Task != FinetuneTask.Sft)
                throw new TianGongException($"--data {PoetryInstructions.Name}: chat conversations, for --task sft (got --task {options.Task.ToString().ToLowerInvariant()})");
            options = options with { Data = PoetryInstructions.Ensure(home, callbacks.Status) };
        }
        using var loaded = ModelFolder.Load(options.ModelDir, training.ScalarType);
        var baseModel = loaded.AsCausalLM("finetune");
        var tokenizer = loaded.Tokenizer ?? throw new TianGongException($"{options.ModelDir}: no tokenizer; fine-tuning on text needs one");
        training = training with { SeqLen = Math.Min(training.SeqLen, baseModel.Config.ContextLength - VirtualTokens(options)) };
        training.Validate("finetune", baseModel.Config.ContextLength);

        // Every data row is checked before the model is touched: a bad row costs no training.
        using var lmData = options.Task == FinetuneTask.Lm ? TextData.Prepare(options.Data, options.Collections, tokenizer, options.ModelDir, home, callbacks.Status) : null;
        var headLabels = options.ClassificationHead ? HeadLabels(options) : null;
        var sftData = options.Task switch
        {
            // The built-in set is made for any model: conversations this model's window cannot hold whole are left out
            // (a poem cut short would teach a cut poem); a user's own file keeps its every row or fails naming it.
            FinetuneTask.Sft => Rows(options, training, device, tokenizer, ChatExamples(tokenizer, builtInInstructions ? training.SeqLen + 1 : null, callbacks.Status)),
            FinetuneTask.Classify when headLabels is not null => Rows(options, training, device, tokenizer, HeadExamples(options, tokenizer, headLabels, training)),
            FinetuneTask.Classify => Rows(options, training, device, tokenizer, ClassifyExamples(options, tokenizer, training.Seed)),
            _ => null,
        };
        if (lmData is not null && options.EvalData is not null)
            throw new TianGongException("--eval-data: the lm task validates on a held-out share of --data; --eval-data is for sft and classify");
        if (lmData is not null && Math.Min(lmData.TrainTokens, lmData.ValTokens) < training.SeqLen + 1)
            throw new TianGongException($"{options.Data}: {lmData.TrainTokens} training and {lmData.ValTokens} held-out tokens; each split needs at least --seq-len + 1 ({training.SeqLen + 1}): use more text or a shorter --seq-len");

        manual_seed(training.Seed);
        var (lm, groups, unfreezing) = Prepare(baseModel, options, tokenizer, training.WeightDecay);
        nn.Module model = lm;
        if (headLabels is not null)
        {
            // transformers' *ForSequenceClassification: the whole network and a fresh score head, fine-tuned together.
            var head = new SequenceClassifier(lm, headLabels.Count);
            head.Score.requires_grad = true;
            (model, groups) = (head, Trainer.DecayGroups(head, training.WeightDecay));
        }
        if (device.type != DeviceType.CPU) model.to(device);
        long total = model.parameters().Sum(p => p.numel());
        long trainable = groups.SelectMany(g => g.Parameters).Sum(p => p.Param.numel());
        callbacks.Status?.Invoke($"{options.Method.Name()} fine-tuning of {options.ModelDir} ({loaded.Config.ModelType}): " +
                                 $"{trainable:N0} of {total:N0} parameters train ({100.0 * trainable / total:F3}%)");

        var run = RunFolder.Prepare(outDir, callbacks.Status);
        var runConfig = new JsonObject
        {
            ["model"] = Path.GetFullPath(options.ModelDir),
            ["method"] = options.Method.Name(),
            ["task"] = options.Task.ToString().ToLowerInvariant(),
            ["data"] = options.Data,
            ["training"] = ConfigJson.ToNode(training),
        };
        ITrainingData<TokenBatch> data = sftData ?? (ITrainingData<TokenBatch>)new NextTokenData(
            new BatchSampler(lmData!, (ulong)training.Seed), training.BatchSize, training.SeqLen, training.EvalBatches, device);
        var trainer = new Trainer<TokenBatch>(model, data, LanguageModeling.NextTokenLossFor(model), groups, ParallelContext.SingleProcess(device), training, outDir, runConfig)
        {
            TokensPerStep = (long)training.BatchSize * training.SeqLen * training.GradAccum,
            OnProgress = callbacks.Progress,
            OnStepStart = unfreezing is null ? null : unfreezing.Apply,
            OnCheckpoint = _ =>
            {
                if (model is SequenceClassifier head) SequenceClassification.Save(options.ModelDir, outDir, head, loaded.Config, headLabels!);
                else SaveOutput(options, outDir, lm, loaded);
                run.SaveLossPlot();
            },
        };
        long steps = trainer.Train(options.Resume, cancel);
        return new FinetuneResult(outDir, steps, steps < training.MaxSteps, run.LastValLoss(), total, trainable, run.MetricsPath, run.LossPlotPath,
            options.Method is FinetuneMethod.Lora or FinetuneMethod.Prompt or FinetuneMethod.PtuningV2 ? "adapter folder (PEFT layout)" : "model folder");
    }

    /// <summary>Cache slots the method's virtual tokens take from the context (prompt tuning, P-tuning v2).</summary>
    private static int VirtualTokens(FinetuneOptions options) => options.Method switch
    {
        FinetuneMethod.Prompt => options.Prompt?.NumVirtualTokens ?? 0,
        FinetuneMethod.PtuningV2 => options.Prefix?.NumVirtualTokens ?? 0,
        _ => 0,
    };

    /// <summary>The module to train and its optimizer groups: only what the method trains is in a group, everything else frozen.</summary>
    internal static (CausalLM Model, IReadOnlyList<ParameterGroup> Groups, ProgressiveUnfreezing? Unfreezing) Prepare(
        CausalLM model, FinetuneOptions options, ITextTokenizer? tokenizer, double weightDecay)
    {
        switch (options.Method)
        {
            case FinetuneMethod.Full:
                foreach (var p in model.parameters()) p.requires_grad = true;
                return (model, Trainer.DecayGroups(model, weightDecay), null);
            case FinetuneMethod.Lora:
                var lora = options.Lora ?? throw new TianGongException("--method lora needs LoRA settings");
                foreach (var p in model.parameters()) p.requires_grad = false;
                LoraAdapter.Inject(model, lora);
                foreach (var (_, layer) in LoraAdapter.Layers(model))
                {
                    layer.A.requires_grad = true;
                    layer.B.requires_grad = true;
                }
                return (model, Trainer.DecayGroups(model, weightDecay), null);
            case FinetuneMethod.Unfreeze:
                var schedule = new ProgressiveUnfreezing(model, model.Config.LayerCount, options.Unfreeze ?? new UnfreezeOptions());
                return (model, schedule.Groups(model, weightDecay), schedule);
            case FinetuneMethod.Prompt:
                var prompt = options.Prompt ?? throw new TianGongException("--method prompt needs prompt-tuning settings");
                foreach (var p in model.parameters()) p.requires_grad = false;
                var tuned = prompt.Create(model, tokenizer);
                tuned.Prompt.requires_grad = true;
                // The soft prompt is an embedding: no weight decay (PEFT trains it with plain AdamW on it alone).
                return (tuned, [new ParameterGroup([("prompt_embeddings", tuned.Prompt)], 0)], null);
            case FinetuneMethod.PtuningV2:
                var prefix = options.Prefix ?? throw new TianGongException("--method ptuning-v2 needs prefix-tuning settings");
                foreach (var p in model.parameters()) p.requires_grad = false;
                var prefixed = prefix.Create(model);
                var encoder = prefixed.Encoder.named_parameters().Select(p => ("prompt_encoder." + p.name, p.parameter)).ToList();
                foreach (var (_, p) in encoder) p.requires_grad = true;
                // Virtual-token keys and values (and their MLP) train without weight decay, as the soft prompt does.
                return (prefixed, [new ParameterGroup(encoder, 0)], null);
            default:
                throw new ArgumentOutOfRangeException(nameof(options));
        }
    }

    private static void SaveOutput(FinetuneOptions options, string outDir, CausalLM model, LoadedModel loaded)
    {
        var baseName = Path.GetFullPath(options.ModelDir);
        switch (options.Method)
        {
            case FinetuneMethod.Lora:
                LoraAdapter.Save(model, options.Lora! with { BaseModelNameOrPath = baseName }, outDir);
                break;
            case FinetuneMethod.Prompt:
                (options.Prompt! with { BaseModelNameOrPath = baseName }).Save((PromptTunedLM)model, outDir);
                break;
            case FinetuneMethod.PtuningV2:
                (options.Prefix! with { BaseModelNameOrPath = baseName }).Save((PrefixTunedLM)model, outDir);
                break;
            default:
                AdapterFolder.SavePlainModel(options.ModelDir, outDir, model, loaded.Config);
                break;
        }
    }

    /// <param name="wholeWithin">When set, conversations longer than this many tokens are left out (and counted) instead of cut.</param>
    private static Func<string, bool, List<MaskedExample>> ChatExamples(ITextTokenizer tokenizer, int? wholeWithin = null, Action<string>? status = null)
    {
        var template = tokenizer.ChatTemplate ?? ChatTemplate.Default;
        return (path, _) =>
        {
            var all = ChatRows.Read(path).Select(row =>
            {
                var tokens = ChatTokens.Build(row.Messages, template, tokenizer);
                return new MaskedExample(tokens.Ids, tokens.Trained, $"{path}:{row.Line}");
            }).ToList();
            if (wholeWithin is not { } limit) return all;
            var kept = all.Where(e => e.Ids.Length <= limit).ToList();
            status?.Invoke($"{path}: {kept.Count} of {all.Count} conversations fit whole in {limit} tokens; the others are left out");
            return kept.Count > 0 ? kept : throw new TianGongException($"{path}: no conversation fits in {limit} tokens; raise --seq-len");
        };
    }

    /// <summary>The head's labels in id order: the verbalizer's when given, else those of the training rows, sorted.</summary>
    private static IReadOnlyList<string> HeadLabels(FinetuneOptions options)
    {
        if (options.Classify?.Verbalizer is { Count: > 0 } verbalizer) return verbalizer.Keys.ToList();
        var labels = LabeledRows.Read(options.Data).Select(r => r.Label).Distinct().Order(StringComparer.Ordinal).ToList();
        if (labels.Count < 2) throw new TianGongException($"{options.Data}: the classification head needs rows of at least two labels, found {labels.Count}");
        return labels;
    }

    private static Func<string, bool, List<MaskedExample>> HeadExamples(FinetuneOptions options, ITextTokenizer tokenizer, IReadOnlyList<string> labels, TrainingSection training)
    {
        int shots = options.Classify?.Shots ?? 0, maxTokens = Math.Min(options.Classify?.MaxTextTokens ?? 200, training.SeqLen);
        return (path, isTraining) =>
        {
            var rows = LabeledRows.Read(path);
            int Index(LabeledRow r) => labels.ToList().IndexOf(r.Label) is var i and >= 0
                ? i : throw new TianGongException($"{path}:{r.Line}: field 'label': '{r.Label}' is not one of the head's labels ({string.Join(", ", labels)})");
            foreach (var row in rows) Index(row);
            if (isTraining && shots > 0) rows = LabeledRows.SampleShots(rows, shots, training.Seed);
            return rows.Select(r => SequenceClassification.Example(tokenizer, r.Text, Index(r), maxTokens, $"{path}:{r.Line}")).ToList();
        };
    }

    private static Func<string, bool, List<MaskedExample>> ClassifyExamples(FinetuneOptions options, ITextTokenizer tokenizer, long seed)
    {
        var settings = options.Classify ?? throw new TianGongException("--task classify needs --template and --verbalizer");
        var classifier = new PromptClassifier(settings.Template, settings.Verbalizer, tokenizer) { MaxTextTokens = settings.MaxTextTokens };
        return (path, training) =>
        {
            var rows = LabeledRows.Read(path);
            foreach (var row in rows) classifier.LabelIndex(row.Label, $"{path}:{row.Line}: field 'label'");
            if (training && settings.Shots > 0) rows = LabeledRows.SampleShots(rows, settings.Shots, seed);
            return rows.Select(r => classifier.TrainingExample(r, $"{path}:{r.Line}")).ToList();
        };
    }

    /// <summary>Batches of whole rows; validation on --eval-data, else on a seeded tenth of the rows (all of them when that leaves none).</summary>
    private static MaskedExampleData Rows(FinetuneOptions options, TrainingSection training, Device device, ITextTokenizer tokenizer,
        Func<string, bool, List<MaskedExample>> examples)
    {
        var all = examples(options.Data, true);
        List<MaskedExample> train = all, validation;
        if (options.EvalData is { } eval) validation = examples(eval, false);
        else
        {
            var held = all.Where((_, i) => TokenShardWriter.IsValidation(i, (ulong)training.Seed, 0.1)).ToList();
            (train, validation) = held.Count == 0 || held.Count == all.Count ? (all, all) : (all.Except(held).ToList(), held);
        }
        return new MaskedExampleData(train, validation.Take(training.EvalBatches * training.BatchSize).ToList(),
            training.BatchSize, training.SeqLen, tokenizer.PadId >= 0 ? tokenizer.PadId : Math.Max(0, tokenizer.EosId), training.Seed, device);
    }

}
