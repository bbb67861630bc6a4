using Spectre.Console;
using TianGong.Training;

namespace TianGong.Cli.Commands;

/// <summary>Shows a training run: a live progress bar on a terminal, one line per logged step otherwise (CI, pipes).</summary>
internal static class TrainingView
{
    public static PretrainResult Run(PretrainConfig config, PretrainOptions options, CancellationToken outer) =>
        Run((callbacks, cancel) => Pretraining.Run(config, options, callbacks, cancel), outer);

    /// <summary>
    /// Runs any training on the generic trainer (pretraining, fine-tuning, vision) that reports through
    /// <see cref="PretrainCallbacks"/>, with Ctrl-C handling; <paramref name="unit"/> names its throughput
    /// (tok/s, img/s; perplexity only for tokens).
    /// </summary>
    public static TResult Run<TResult>(Func<PretrainCallbacks, CancellationToken, TResult> train, CancellationToken outer, string unit = "tok/s")
    {
        using var interruption = new Interruption(outer);
        var cancel = interruption.Token;
        void Status(string message) => AnsiConsole.MarkupLineInterpolated($"[grey]{message}[/]");
        if (!AnsiConsole.Profile.Capabilities.Interactive)
            return train(new PretrainCallbacks(Status, p => AnsiConsole.WriteLine(Describe(p, unit))), cancel);

        TResult? result = default;
        AnsiConsole.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(),
                     new ElapsedTimeColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                ProgressTask? task = null;
                result = train(new PretrainCallbacks(
                    Status,
                    p =>
                    {
                        task ??= ctx.AddTask("training", maxValue: p.TotalSteps);
                        task.Value = p.Step;
                        task.Description = Markup.Escape(Describe(p, unit));
                    }), cancel);
            });
        return result!;
    }

    private static string Describe(TrainingProgress p, string unit) =>
        $"step {p.Step}/{p.TotalSteps}  loss {p.TrainLoss:F3}" + (p.ValLoss is { } v ? $"  val {v:F3}" + (unit == "tok/s" ? $" (ppl {Math.Exp(v):F1})" : "") : "") +
        string.Concat((p.Metrics ?? new Dictionary<string, double>()).Select(m => $"  {m.Key} {m.Value:F3}")) +
        $"  lr {p.LearningRate:E2}  {p.TokensPerSecond:N0} {unit}";
}
