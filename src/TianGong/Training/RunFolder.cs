namespace TianGong.Training;

/// <summary>
/// The folder a training run writes (pretraining, fine-tuning, distillation, vision): metrics.jsonl and loss.png beside
/// the checkpoint-N folders and the model files. Every training command prepares it the same way and reads the same
/// files back at the end, so they all go through this one type.
/// </summary>
public sealed class RunFolder
{
    public const string LossPlotFile = "loss.png";

    private RunFolder(string dir) => Dir = dir;

    public string Dir { get; }

    public string MetricsPath => Path.Combine(Dir, MetricsLog.FileName);

    public string LossPlotPath => Path.Combine(Dir, LossPlotFile);

    /// <summary>
    /// Creates the folder and, where this process writes it (<paramref name="isWriter"/>: rank 0 of a parallel job),
    /// removes what an interrupted save left behind; says so, and warns when loss.png will have no labels.
    /// </summary>
    public static RunFolder Prepare(string dir, Action<string>? status, bool isWriter = true)
    {
        Directory.CreateDirectory(dir);
        if (isWriter && TrainingCheckpoint.CleanUpInterruptedSaves(dir) is { Count: > 0 } removed)
            status?.Invoke($"removed {removed.Count} temporary file(s) of an interrupted save: {string.Join(", ", removed.Select(Path.GetFileName))}");
        if (isWriter && LossPlot.MissingFontsWarning() is { } fonts) status?.Invoke(fonts);
        return new RunFolder(dir);
    }

    /// <summary>Redraws loss.png from metrics.jsonl (at every checkpoint).</summary>
    public void SaveLossPlot() => LossPlot.Save(LossPlotPath, MetricsLog.Read(MetricsPath));

    /// <summary>The last validation loss the run logged, or null when it logged none.</summary>
    public double? LastValLoss() => MetricsLog.Read(MetricsPath).LastOrDefault(r => r.ValLoss is not null)?.ValLoss;
}
