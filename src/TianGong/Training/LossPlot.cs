using ScottPlot;

namespace TianGong.Training;

/// <summary>
/// The loss curves of a run as a PNG, drawn with ScottPlot: train loss as a line, validation loss as a line with
/// markers, and the learning rate on a second (right) axis, so a run folder can be judged at a glance.
/// </summary>
public static class LossPlot
{
    public const int Width = 900, Height = 540;

    internal static readonly Color TrainColor = Color.FromHex("#1F77B4");
    internal static readonly Color ValColor = Color.FromHex("#E66E14");
    internal static readonly Color LearningRateColor = Color.FromHex("#2CA02C");

    /// <summary>Writes the chart atomically (temp file, then rename), so a viewer never sees a half-written PNG.</summary>
    public static void Save(string pngPath, IReadOnlyList<MetricsRecord> records)
    {
        var png = Render(records);
        AtomicFile.Write(pngPath, stream => stream.Write(png));
    }

    /// <summary>The chart as PNG bytes. Non-finite losses (a diverged step) are left out rather than wreck the scale.</summary>
    internal static byte[] Render(IReadOnlyList<MetricsRecord> records)
    {
        var train = records.Where(r => double.IsFinite(r.TrainLoss)).ToList();
        var val = records.Where(r => r.ValLoss is { } v && double.IsFinite(v)).ToList();
        var rates = records.Where(r => r.LearningRate is { } lr && double.IsFinite(lr)).ToList();

        using var plot = new Plot();
        plot.Title("Training loss");
        plot.XLabel("step");
        plot.YLabel("loss (cross-entropy)");
        if (train.Count > 0)
        {
            var line = plot.Add.Scatter(train.Select(r => (double)r.Step).ToArray(), train.Select(r => r.TrainLoss).ToArray(), TrainColor);
            line.LegendText = "train loss";
            line.LineWidth = 2;
            line.MarkerSize = train.Count == 1 ? 7 : 0; // a lone point has no segment to show it
        }
        if (val.Count > 0)
        {
            var line = plot.Add.Scatter(val.Select(r => (double)r.Step).ToArray(), val.Select(r => r.ValLoss!.Value).ToArray(), ValColor);
            line.LegendText = "validation loss";
            line.LineWidth = 2;
            line.MarkerSize = 8;
        }
        if (rates.Count > 0)
        {
            var line = plot.Add.Scatter(rates.Select(r => (double)r.Step).ToArray(), rates.Select(r => r.LearningRate!.Value).ToArray(), LearningRateColor);
            line.LegendText = "learning rate (right axis)";
            line.LineWidth = 1.5f;
            line.LinePattern = LinePattern.Dashed;
            line.MarkerSize = 0;
            line.Axes.YAxis = plot.Axes.Right;
            plot.Axes.Right.Label.Text = "learning rate";
            plot.Axes.Right.TickLabelStyle.ForeColor = LearningRateColor;
        }
        if (train.Count + val.Count + rates.Count > 0) plot.ShowLegend(Alignment.UpperRight);
        return plot.GetImageBytes(Width, Height, ImageFormat.Png);
    }
}
