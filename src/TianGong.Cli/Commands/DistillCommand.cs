using System.CommandLine;
using Spectre.Console;
using TianGong.Compression.Distillation;
using TianGong.Training;

namespace TianGong.Cli.Commands;

/// <summary><c>tiangong distill</c>: teach a smaller student from a teacher model folder, with the training view, metrics, plot, checkpoints and --resume of every run.</summary>
internal static class DistillCommand
{
    public static Command Create()
    {
        var teacher = new Option<string>("--teacher") { Description = "Teacher model folder", Required = true };
        var student = new Option<string>("--student") { Description = "Student: a model folder (same tokenizer as the teacher) or a config.json to build fresh", Required = true };
        var data = new Option<string>("--data") { Description = "chinese-poetry or a text/JSONL file", Required = true };
        var collections = new Option<string?>("--collections") { Description = "chinese-poetry collections (tang,song,ci)" };
        var output = new Option<string>("--out") { Description = "Run folder: the student's model folder, plus checkpoints and metrics", Required = true };
        var temperature = new Option<double>("--temperature") { Description = "Softmax temperature of the soft targets (KL scaled by T²)", DefaultValueFactory = _ => 2.0 };
        var alpha = new Option<double>("--alpha") { Description = "Weight of the soft-target KL; 1 - alpha weighs the next-token loss", DefaultValueFactory = _ => 0.5 };
        var hiddenLoss = new Option<string?>("--hidden-loss") { Description = "Hidden-state matching through a learned projection: mse (needs --layer-map)" };
        var layerMap = new Option<string?>("--layer-map") { Description = "teacher:student layer pairs for --hidden-loss, e.g. 0:0,2:1" };
        var hiddenWeight = new Option<double>("--hidden-weight") { Description = "Weight of the hidden-state loss", DefaultValueFactory = _ => 1.0 };
        var initFromTeacher = new Option<bool>("--init-from-teacher") { Description = "Copy every teacher tensor whose name and shape the student shares" };
        var maxSteps = new Option<int>("--max-steps") { Description = "Optimizer updates", DefaultValueFactory = _ => 200 };
        var lr = new Option<double>("--lr") { Description = "Peak learning rate", DefaultValueFactory = _ => 1e-3 };
        var batch = new Option<int>("--batch-size") { Description = "Sequences per update", DefaultValueFactory = _ => 8 };
        var seqLen = new Option<int>("--seq-len") { Description = "Tokens per sequence (cut to the models' context)", DefaultValueFactory = _ => 128 };
        var seed = new Option<long>("--seed") { Description = "Seed of batches and initialisation", DefaultValueFactory = _ => 1337 };
        var resume = new Option<bool>("--resume") { Description = "Continue from the newest complete checkpoint in --out" };
        var device = ModelOptions.DeviceOption();
        var command = new Command("distill", "Distil a teacher into a student: KL on softened logits mixed with next-token loss, optional hidden-state matching")
        {
            teacher, student, data, collections, output, temperature, alpha, hiddenLoss, layerMap, hiddenWeight, initFromTeacher,
            maxSteps, lr, batch, seqLen, seed, resume, device,
        };
        command.SetAction((parse, cancel) => Task.FromResult(CliRunner.Run(() =>
        {
            int steps = parse.GetValue(maxSteps);
            if (steps < 1) throw new TianGongException($"--max-steps: must be at least 1, got {steps}");
            var map = parse.GetValue(layerMap);
            var pairs = parse.GetValue(hiddenLoss) switch
            {
                null => map is null ? null : throw new TianGongException("--layer-map: needs --hidden-loss mse"),
                "mse" => LayerPair.ParseMap(map ?? throw new TianGongException("--hidden-loss mse: needs --layer-map (e.g. 0:0,2:1)")),
                var other => throw new TianGongException($"--hidden-loss: '{other}' is not supported (mse)"),
            };
            double peak = parse.GetValue(lr);
            var training = new TrainingSection(SeqLen: parse.GetValue(seqLen), BatchSize: parse.GetValue(batch), MaxSteps: steps,
                LearningRate: peak, MinLearningRate: peak / 10, WarmupSteps: Math.Max(1, steps / 10), WeightDecay: 0.1,
                EvalInterval: Math.Max(1, steps / 5), EvalBatches: 4, LogInterval: Math.Max(1, steps / 50), CheckpointInterval: Math.Max(1, steps / 4),
                Seed: parse.GetValue(seed));
            var options = new DistillOptions(parse.GetValue(teacher)!, parse.GetValue(student)!, parse.GetValue(output)!, parse.GetValue(data)!, training,
                new DistillationSettings(parse.GetValue(temperature), parse.GetValue(alpha), pairs, parse.GetValue(hiddenWeight)),
                InitFromTeacher: parse.GetValue(initFromTeacher),
                Collections: parse.GetValue(collections)?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
                Resume: parse.GetValue(resume), Device: ModelOptions.ParseDevice(parse.GetValue(device)!));
            var result = TrainingView.Run((callbacks, token) => Distillation.Run(options, callbacks, token), cancel);
            var validation = result.FinalValLoss is { } v ? $", validation loss {v:F3}" : "";
            if (result.Interrupted)
                AnsiConsole.MarkupLineInterpolated($"[yellow]stopped[/] at step {result.Steps} (checkpoint written; continue with --resume){validation}");
            else
                AnsiConsole.MarkupLineInterpolated($"[green]done:[/] {result.Steps} steps; student {result.StudentParameters:N0} parameters (teacher {result.TeacherParameters:N0}){validation}");
            AnsiConsole.MarkupLineInterpolated($"  held-out KL to the teacher: {result.InitialKL:F4} → {result.FinalKL:F4}");
            AnsiConsole.MarkupLineInterpolated($"  model folder: {result.OutDir}");
            AnsiConsole.MarkupLineInterpolated($"  metrics:      {result.MetricsPath}");
            AnsiConsole.MarkupLineInterpolated($"  loss curve:   {result.LossPlotPath}");
            return result.Interrupted ? 130 : 0;
        })));
        return command;
    }
}
