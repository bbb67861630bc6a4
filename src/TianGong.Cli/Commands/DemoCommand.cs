using System.CommandLine;
using Spectre.Console;
using TianGong.Checkpoints;
using TianGong.Inference;
using TianGong.Training;

namespace TianGong.Cli.Commands;

/// <summary>The README's first command: pretrain the built-in poetry model on CPU, then write poems with it.</summary>
internal static class DemoCommand
{
    public static Command Create()
    {
        var config = new Option<string>("--config") { Description = "Config file or built-in name", DefaultValueFactory = _ => "poetry-tiny" };
        var output = new Option<string>("--out") { Description = "Run folder (replaced on each demo run)", DefaultValueFactory = _ => Path.Combine("runs", "poetry-demo") };
        var maxSteps = new Option<int?>("--max-steps") { Description = "Override training.max_steps" };
        var command = new Command("demo", "Pretrain a small poetry model on chinese-poetry, then generate poems and an acrostic poem") { config, output, maxSteps };
        command.SetAction((parse, cancel) => Task.FromResult(CliRunner.Run(() =>
        {
            var cfg = BuiltInConfigs.Load(parse.GetValue(config)!);
            var outDir = parse.GetValue(output)!;
            if (TrainingCheckpoint.List(outDir).Count > 0)
            {
                AnsiConsole.MarkupLineInterpolated($"[grey]replacing the previous demo run in {outDir}[/]");
                Directory.Delete(outDir, recursive: true);
            }
            AnsiConsole.Write(new Rule("[bold]天工 TianGong demo: pretraining a poetry model[/]").LeftJustified());
            var result = TrainingView.Run(cfg, new PretrainOptions(outDir, MaxSteps: parse.GetValue(maxSteps)), cancel);
            if (result.Interrupted)
            {
                PretrainCommand.Report(result);
                return 130;
            }
            WritePoems(result.OutDir, cfg.Generation);
            PretrainCommand.Report(result);
            return 0;
        })));
        return command;
    }

    private static void WritePoems(string modelDir, GenerationSection g)
    {
        using var loaded = ModelFolder.Load(modelDir);
        var tokenizer = loaded.Tokenizer!;
        var generator = new TextGenerator(loaded.AsCausalLM("generate"), tokenizer);
        var options = new SamplingOptions(g.MaxNewTokens, g.Temperature, g.TopK, g.TopP, g.RepetitionPenalty, Seed: g.Seed, MinNewTokens: g.MinNewTokens);
        AnsiConsole.Write(new Rule("[bold]poems[/]").LeftJustified());
        var titles = g.Titles ?? [];
        for (int i = 0; i < titles.Count; i++)
        {
            // A seed per poem: with one shared seed, every poem would draw the same random numbers.
            var poem = generator.Generate(titles[i] + "\n", options with { Seed = g.Seed + i });
            Show(titles[i], poem.Text);
        }
        if (g.Acrostic is { Length: > 0 } heads)
        {
            AnsiConsole.Write(new Rule($"[bold]藏头诗 (acrostic): {Markup.Escape(heads)}[/]").LeftJustified());
            var poem = generator.Generate(heads + "\n", options with { MaxNewTokens = Math.Max(g.MaxNewTokens, 24 * heads.Length) },
                new AcrosticConstraint(tokenizer, heads));
            Show(heads, poem.Text);
        }
    }

    private static void Show(string title, string body) =>
        AnsiConsole.Write(new Panel(Markup.Escape(body.TrimEnd())) { Header = new PanelHeader(Markup.Escape(title)), Border = BoxBorder.Rounded });
}
