using System.CommandLine;
using Spectre.Console;
using TianGong.Training;

namespace TianGong.Cli.Commands;

internal static class PretrainCommand
{
    public static Command Create()
    {
        var config = new Option<string>("--config") { Description = "Pretraining config: a JSON file or a built-in name (poetry-tiny, poetry-small)", Required = true };
        var output = new Option<string?>("--out") { Description = "Run folder (a Hugging Face model folder plus checkpoints and metrics); default runs/<config name>" };
        var maxSteps = new Option<int?>("--max-steps") { Description = "Override training.max_steps" };
        var seed = new Option<long?>("--seed") { Description = "Override training.seed" };
        var resume = new Option<bool>("--resume") { Description = "Continue from the newest complete checkpoint in --out" };
        var initFrom = new Option<string?>("--init-from") { Description = "Start from this model folder's weights, config and tokenizer instead of random weights (overrides training.init_from)" };
        var device = ModelOptions.DeviceOption();
        var parallel = new Option<string?>("--parallel") { Description = "Spread over processes, e.g. dp=2,zero=1 (overrides the config's parallel section; run under tiangong launch -n N)" };
        var command = new Command("pretrain", "Pretrain a decoder language model, from scratch or from a model folder") { config, output, maxSteps, seed, resume, initFrom, device, parallel };
        command.SetAction((parse, cancel) => Task.FromResult(CliRunner.Run(() =>
        {
            var name = parse.GetValue(config)!;
            var onDevice = ModelOptions.ParseDevice(parse.GetValue(device)!);
            var cfg = BuiltInConfigs.Load(name);
            var outDir = parse.GetValue(output) ?? Path.Combine("runs", Path.GetFileNameWithoutExtension(name));
            var result = TrainingView.Run(cfg, new PretrainOptions(outDir, parse.GetValue(resume), parse.GetValue(maxSteps), parse.GetValue(seed),
                InitFrom: parse.GetValue(initFrom), Device: onDevice,
                Parallel: parse.GetValue(parallel) is { } layout ? Parallelism.ParallelConfig.Parse(layout, cfg.Parallel) : null), cancel);
            Report(result);
            return result.Interrupted ? 130 : 0;
        })));
        return command;
    }

    public static void Report(PretrainResult r)
    {
        var validation = r.FinalValLoss is { } v ? $", validation loss {v:F3} (perplexity {Math.Exp(v):F1})" : "";
        if (r.Interrupted)
            AnsiConsole.MarkupLineInterpolated($"[yellow]stopped[/] at step {r.Steps} (checkpoint written; continue with --resume), {r.Parameters / 1e6:F2}M parameters{validation}");
        else
            AnsiConsole.MarkupLineInterpolated($"[green]done:[/] {r.Steps} steps, {r.Parameters / 1e6:F2}M parameters{validation}");
        AnsiConsole.MarkupLineInterpolated($"  model folder: {r.OutDir}");
        AnsiConsole.MarkupLineInterpolated($"  checkpoints:  {r.OutDir}/checkpoint-N (resume with --resume)");
        AnsiConsole.MarkupLineInterpolated($"  metrics:      {r.MetricsPath}");
        AnsiConsole.MarkupLineInterpolated($"  loss curve:   {r.LossPlotPath}");
    }
}
