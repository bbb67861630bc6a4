using System.CommandLine;
using Spectre.Console;
using TianGong.Checkpoints;
using TianGong.Inference;
using TianGong.Poetry;
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
            WritePoems(result.OutDir, cfg.Generation, cfg.Data.Form);
            PretrainCommand.Report(result);
            return 0;
        })));
        return command;
    }

    /// <summary>
    /// Each title's poem in a regulated form (五言 and 七言 in turn, 絕句 unless the data was 律詩), and the acrostic as a
    /// 七言 poem of as many lines: the form constraint gives every poem the shape of a real one, whatever the model's skill.
    /// </summary>
    private static void WritePoems(string modelDir, GenerationSection g, string dataForm)
    {
        using var loaded = ModelFolder.Load(modelDir);
        var tokenizer = loaded.Tokenizer!;
        var generator = new TextGenerator(loaded.AsCausalLM("generate"), tokenizer);
        var options = new SamplingOptions(g.MaxNewTokens, g.Temperature, g.TopK, g.TopP, g.RepetitionPenalty, Seed: g.Seed, MinNewTokens: g.MinNewTokens);
        VerseForm[] forms = dataForm == "lushi" ? [VerseForm.Lushi5, VerseForm.Lushi7] : [VerseForm.Jueju5, VerseForm.Jueju7];
        AnsiConsole.Write(new Rule($"[bold]poems ({string.Join(", ", forms.Select(f => f.Name))} in turn)[/]").LeftJustified());
        var titles = g.Titles ?? [];
        for (int i = 0; i < titles.Count; i++)
        {
            // A seed per poem: with one shared seed, every poem would draw the same random numbers.
            var form = forms[i % forms.Length];
            var poem = generator.Generate(titles[i] + "\n", ForForm(options, form) with { Seed = g.Seed + i }, PoemConstraint.Create(tokenizer, form, null));
            Show(titles[i], poem.Text);
        }
        if (g.Acrostic is { Length: > 0 } heads)
        {
            int lines = heads.EnumerateRunes().Count();
            var form = lines <= 4 ? VerseForm.Jueju7 : lines <= 8 ? VerseForm.Lushi7 : null;
            AnsiConsole.Write(new Rule($"[bold]藏头诗 (acrostic): {Markup.Escape(heads)}{(form is null ? "" : $" ({form.Name})")}[/]").LeftJustified());
            var acrosticOptions = form is null ? options with { MaxNewTokens = Math.Max(g.MaxNewTokens, 24 * lines) } : ForForm(options, form);
            var poem = generator.Generate(heads + "\n", acrosticOptions, PoemConstraint.Create(tokenizer, form, heads));
            Show(heads, poem.Text);
        }
    }

    // Room for the whole form; min_new_tokens has no say once the form is complete.
    private static SamplingOptions ForForm(SamplingOptions options, VerseForm form) =>
        options with { MaxNewTokens = Math.Max(options.MaxNewTokens, PoemConstraint.TokenBudget(form)) };

    private static void Show(string title, string body) =>
        AnsiConsole.Write(new Panel(Markup.Escape(body.TrimEnd())) { Header = new PanelHeader(Markup.Escape(title)), Border = BoxBorder.Rounded });
}
