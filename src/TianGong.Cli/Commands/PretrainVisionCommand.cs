using System.CommandLine;
using Spectre.Console;
using TianGong.Training;
using TianGong.Vision.Training;

namespace TianGong.Cli.Commands;

internal static class PretrainVisionCommand
{
    public static Command Create()
    {
        var config = new Option<string>("--config") { Description = "Vision pretraining config (JSON), e.g. configs/fashion-resnet.json", Required = true };
        var method = new Option<string>("--method") { Description = "simclr | moco | csmi (self-supervised) or supcon | scan (supervised contrastive)", Required = true };
        var output = new Option<string?>("--out") { Description = "Run folder (a Hugging Face model folder of the backbone plus checkpoints and metrics); default runs/<config name>-<method>" };
        var maxSteps = new Option<int?>("--max-steps") { Description = "Override training.max_steps" };
        var seed = new Option<long?>("--seed") { Description = "Override training.seed" };
        var resume = new Option<bool>("--resume") { Description = "Continue from the newest complete checkpoint in --out" };
        var device = ModelOptions.DeviceOption();
        var command = new Command("pretrain-vision", "Pretrain a vision backbone (vit, resnet) by contrastive learning: SimCLR, MoCo, CsMI, SupCon or SCAN")
            { config, method, output, maxSteps, seed, resume, device };
        command.SetAction((parse, cancel) => Task.FromResult(CliRunner.Run(() =>
        {
            var name = parse.GetValue(config)!;
            var objective = ContrastiveMethods.Parse(parse.GetValue(method)!);
            var onDevice = ModelOptions.ParseDevice(parse.GetValue(device)!);
            var cfg = LoadConfig(name);
            var outDir = parse.GetValue(output) ?? Path.Combine("runs", $"{Path.GetFileNameWithoutExtension(name)}-{objective.Name()}");
            var options = new VisionPretrainOptions(outDir, objective, parse.GetValue(resume), parse.GetValue(maxSteps), parse.GetValue(seed), onDevice);
            var result = TrainingView.Run((callbacks, token) => VisionPretraining.Run(cfg, options, callbacks, token), cancel, "img/s");
            Report(result);
            return result.Interrupted ? 130 : 0;
        })));
        return command;
    }

    /// <summary>A config file, or the name of one shipped in configs/ (fashion-resnet, fashion-vit), embedded in the CLI.</summary>
    public static VisionPretrainConfig LoadConfig(string pathOrName)
    {
        if (File.Exists(pathOrName)) return VisionPretrainConfig.Load(pathOrName);
        using var stream = System.Reflection.Assembly.GetExecutingAssembly().GetManifestResourceStream($"configs/{pathOrName}.json")
            ?? throw new TianGongException($"--config: no file '{pathOrName}' and no built-in config of that name (built in: fashion-resnet, fashion-vit)");
        using var reader = new StreamReader(stream);
        return VisionPretrainConfig.Parse(System.Text.Json.Nodes.JsonNode.Parse(reader.ReadToEnd())!, $"{pathOrName} (built-in)");
    }

    private static void Report(PretrainResult r)
    {
        var validation = r.FinalValLoss is { } v ? $", validation loss {v:F3}" : "";
        if (r.Interrupted)
            AnsiConsole.MarkupLineInterpolated($"[yellow]stopped[/] at step {r.Steps} (checkpoint written; continue with --resume), {r.Parameters / 1e6:F2}M backbone parameters{validation}");
        else
            AnsiConsole.MarkupLineInterpolated($"[green]done:[/] {r.Steps} steps, {r.Parameters / 1e6:F2}M backbone parameters{validation}");
        AnsiConsole.MarkupLineInterpolated($"  model folder: {r.OutDir} (the backbone; eval-vision --model and embed --image read it)");
        AnsiConsole.MarkupLineInterpolated($"  checkpoints:  {r.OutDir}/checkpoint-N (resume with --resume)");
        AnsiConsole.MarkupLineInterpolated($"  metrics:      {r.MetricsPath}");
        AnsiConsole.MarkupLineInterpolated($"  loss curve:   {r.LossPlotPath}");
    }
}
