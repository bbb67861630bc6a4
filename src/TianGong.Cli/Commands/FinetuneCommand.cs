using System.CommandLine;
using Spectre.Console;
using TianGong.Models.Layers;
using TianGong.Training;
using TianGong.Tuning;

namespace TianGong.Cli.Commands;

/// <summary><c>tiangong finetune</c>: adapt a pretrained model folder to a task, with the pretraining run's progress bar, metrics, plot, checkpoints and --resume.</summary>
internal static class FinetuneCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Pretrained model folder (Hugging Face layout)", Required = true };
        var method = new Option<FinetuneMethod>("--method")
        {
            Description = "full: every weight; lora: low-rank adapters; unfreeze: top layers first, then downward; prompt: a soft prompt; ptuning-v2: prefix keys and values at every layer",
            DefaultValueFactory = _ => FinetuneMethod.Lora,
            CustomParser = r =>
            {
                try { return FinetuneMethodNames.Parse(r.Tokens.Count == 1 ? r.Tokens[0].Value : ""); }
                catch (TianGong.TianGongException e) { r.AddError(e.Message); return default; }
            },
        };
        method.AcceptOnlyFromAmong([.. FinetuneMethodNames.All]);
        var task = new Option<FinetuneTask>("--task") { Description = "lm: continue pretraining on text; sft: instruction tuning on chat JSONL (loss on assistant tokens); classify: prompt-based, the label word after a template", DefaultValueFactory = _ => FinetuneTask.Lm };
        var data = new Option<string>("--data") { Description = "lm: chinese-poetry or a text/JSONL file; sft: chat JSONL ({\"messages\":[{\"role\",\"content\"}...]}) or poetry-instructions; classify: JSONL {\"text\",\"label\"}; or a task: spam, poetry-tang-ci (lm: its unlabeled training texts; classify: its training rows)", Required = true };
        var collections = new Option<string?>("--collections") { Description = "chinese-poetry collections for lm (tang,song,ci)" };
        var evalData = new Option<string?>("--eval-data") { Description = "sft: chat JSONL to validate on (default: a seeded tenth of --data)" };
        var output = new Option<string>("--out") { Description = "Run folder: the adapter (PEFT layout) or model folder, plus checkpoints and metrics", Required = true };
        var maxSteps = new Option<int>("--max-steps") { Description = "Optimizer updates", DefaultValueFactory = _ => 200 };
        var lr = new Option<double?>("--lr") { Description = "Peak learning rate (default: full/unfreeze 1e-4, lora 1e-3, prompt 3e-2, ptuning-v2 1e-2)" };
        var batch = new Option<int>("--batch-size") { Description = "Sequences per update", DefaultValueFactory = _ => 8 };
        var seqLen = new Option<int>("--seq-len") { Description = "Tokens per sequence (cut to the model's context)", DefaultValueFactory = _ => 128 };
        var seed = new Option<long>("--seed") { Description = "Seed of batches, dropout and initialisation", DefaultValueFactory = _ => 1337 };
        var resume = new Option<bool>("--resume") { Description = "Continue from the newest complete checkpoint in --out" };
        var loraR = new Option<int>("--lora-r") { Description = "LoRA rank", DefaultValueFactory = _ => 8 };
        var loraAlpha = new Option<double>("--lora-alpha") { Description = "LoRA alpha (scaling alpha/r)", DefaultValueFactory = _ => 16 };
        var loraDropout = new Option<double>("--lora-dropout") { Description = "Dropout on the LoRA input", DefaultValueFactory = _ => 0.05 };
        var targets = new Option<string>("--target-modules") { Description = "Layers to adapt: names (q_proj,v_proj), patterns (model.layers.*.mlp.*), or all-linear", DefaultValueFactory = _ => "all-linear" };
        var rslora = new Option<bool>("--rslora") { Description = "rsLoRA scaling alpha/sqrt(r)" };
        var unfreezeLayers = new Option<int>("--unfreeze-layers") { Description = "unfreeze: top layers trained from the start", DefaultValueFactory = _ => 1 };
        var unfreezeEvery = new Option<int>("--unfreeze-every") { Description = "unfreeze: steps between unfreezing one more layer", DefaultValueFactory = _ => 50 };
        var layerDecay = new Option<double>("--layer-lr-decay") { Description = "unfreeze: learning-rate factor per layer of depth (1: off)", DefaultValueFactory = _ => 1.0 };
        var virtualTokens = new Option<int>("--virtual-tokens") { Description = "prompt: soft prompt length; ptuning-v2: prefix length", DefaultValueFactory = _ => 20 };
        var prefixProjection = new Option<bool>("--prefix-projection") { Description = "ptuning-v2: train the prefix through an MLP (PEFT's prefix_projection); the adapter keeps its output" };
        var prefixHidden = new Option<int?>("--prefix-hidden") { Description = "ptuning-v2: hidden width of that MLP (PEFT's encoder_hidden_size; default key/value width)" };
        var promptInit = new Option<string?>("--prompt-init") { Description = "prompt: initialise from this text's token embeddings (default: random vocabulary tokens)" };
        var template = EvalCommand.TemplateOption();
        var verbalizer = EvalCommand.VerbalizerOption();
        var head = new Option<bool>("--classification-head")
        {
            Description = "classify with --method full: a linear score head on the last real token's hidden state (transformers' *ForSequenceClassification) instead of the template and verbalizer; eval then uses the head",
        };
        var shots = new Option<int>("--shots") { Description = "classify: train on k rows per label drawn by --seed (0: every row)", DefaultValueFactory = _ => 0 };
        var device = ModelOptions.DeviceOption();
        var command = new Command("finetune", "Adapt a pretrained model: full, LoRA, progressive unfreezing, prompt tuning or P-tuning v2, on text (lm), chat data (sft) or labeled rows (classify)")
        {
            model, method, task, data, collections, evalData, output, maxSteps, lr, batch, seqLen, seed, resume,
            loraR, loraAlpha, loraDropout, targets, rslora, unfreezeLayers, unfreezeEvery, layerDecay, virtualTokens, promptInit, prefixProjection, prefixHidden, template, verbalizer, head, shots, device,
        };
        command.SetAction((parse, cancel) => Task.FromResult(CliRunner.Run(() =>
        {
            var chosen = parse.GetValue(method);
            var onDevice = ModelOptions.ParseDevice(parse.GetValue(device)!);
            double peak = parse.GetValue(lr) ?? chosen switch { FinetuneMethod.Lora => 1e-3, FinetuneMethod.Prompt => 3e-2, FinetuneMethod.PtuningV2 => 1e-2, _ => 1e-4 };
            int steps = parse.GetValue(maxSteps);
            if (steps < 1) throw new TianGongException($"--max-steps: must be at least 1, got {steps}");
            var training = new TrainingSection(SeqLen: parse.GetValue(seqLen), BatchSize: parse.GetValue(batch), MaxSteps: steps,
                LearningRate: peak, MinLearningRate: peak / 10, WarmupSteps: Math.Max(1, steps / 10), WeightDecay: chosen == FinetuneMethod.Full ? 0.1 : 0.0,
                EvalInterval: Math.Max(1, steps / 5), EvalBatches: 4, LogInterval: Math.Max(1, steps / 50), CheckpointInterval: Math.Max(1, steps / 4),
                Seed: parse.GetValue(seed));
            var promptText = parse.GetValue(promptInit);
            var options = new FinetuneOptions(parse.GetValue(model)!, parse.GetValue(output)!, chosen, parse.GetValue(task), parse.GetValue(data)!, training,
                Lora: new LoraConfig(parse.GetValue(loraR), parse.GetValue(loraAlpha), LayerSelector.Parse(parse.GetValue(targets)!), parse.GetValue(loraDropout), parse.GetValue(rslora)),
                Unfreeze: new UnfreezeOptions(parse.GetValue(unfreezeLayers), parse.GetValue(unfreezeEvery), parse.GetValue(layerDecay)),
                Prompt: new PromptTuningConfig(parse.GetValue(virtualTokens), promptText is null ? "SAMPLE_VOCAB" : "TEXT", promptText),
                Classify: parse.GetValue(verbalizer) is { } words
                    ? new ClassifyOptions(parse.GetValue(template)!, PromptClassifier.ParseVerbalizer(words), parse.GetValue(shots))
                    : parse.GetValue(head) ? new ClassifyOptions(parse.GetValue(template)!, new Dictionary<string, string>(), parse.GetValue(shots)) : null,
                EvalData: parse.GetValue(evalData),
                Collections: parse.GetValue(collections)?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
                Resume: parse.GetValue(resume), Device: onDevice,
                Prefix: new PrefixTuningConfig(parse.GetValue(virtualTokens), parse.GetValue(prefixProjection), parse.GetValue(prefixHidden)),
                ClassificationHead: parse.GetValue(head));
            var result = TrainingView.Run((callbacks, token) => Finetuning.Run(options, callbacks, token), cancel);
            var validation = result.FinalValLoss is { } v ? $", validation loss {v:F3} (perplexity {Math.Exp(v):F1})" : "";
            if (result.Interrupted)
                AnsiConsole.MarkupLineInterpolated($"[yellow]stopped[/] at step {result.Steps} (checkpoint written; continue with --resume){validation}");
            else
                AnsiConsole.MarkupLineInterpolated($"[green]done:[/] {result.Steps} steps, {result.TrainableParameters:N0} of {result.Parameters:N0} parameters trained{validation}");
            AnsiConsole.MarkupLineInterpolated($"  {result.Output}: {result.OutDir}");
            AnsiConsole.MarkupLineInterpolated($"  metrics:      {result.MetricsPath}");
            AnsiConsole.MarkupLineInterpolated($"  loss curve:   {result.LossPlotPath}");
            return result.Interrupted ? 130 : 0;
        })));
        return command;
    }
}
