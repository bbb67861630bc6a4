using System.Globalization;

namespace TianGong.Training;

/// <summary>
/// Draws the loss curves of a run (train loss as a line, validation loss as a line with markers) into a PNG,
/// so a run directory can be judged at a glance without Python or a plotting library.
/// </summary>
public static class LossPlot
{
    public const int Width = 800, Height = 500;

    private const int Left = 90, Right = 24, Top = 40, Bottom = 64; // margins around the plot area, in pixels
    private const int TextScale = 2;

    internal static readonly Rgb Background = new(255, 255, 255);
    internal static readonly Rgb Axis = new(60, 60, 60);
    internal static readonly Rgb Grid = new(225, 225, 225);
    internal static readonly Rgb TrainColor = new(31, 119, 180);
    internal static readonly Rgb ValColor = new(230, 110, 20);

    /// <summary>Writes the chart atomically (temp file, then rename), so a viewer never sees a half-written PNG.</summary>
    public static void Save(string pngPath, IReadOnlyList<MetricsRecord> records)
    {
        var canvas = Render(records);
        AtomicFile.Write(pngPath, stream => PngEncoder.Write(stream, canvas));
    }

    internal static RgbCanvas Render(IReadOnlyList<MetricsRecord> records)
    {
        var train = records.Where(r => double.IsFinite(r.TrainLoss)).Select(r => (r.Step, Loss: r.TrainLoss)).ToList();
        var val = records.Where(r => r.ValLoss is { } v && double.IsFinite(v)).Select(r => (r.Step, Loss: r.ValLoss!.Value)).ToList();
        var all = train.Concat(val).ToList();

        // (min, max) of each axis, widened so a single point or a flat curve still gets a usable range.
        var (xMin, xMax) = all.Count == 0 ? (0.0, 1.0) : Widen(all.Min(p => p.Step), all.Max(p => p.Step), 1.0);
        var (yMin, yMax) = all.Count == 0 ? (0.0, 1.0) : Widen(all.Min(p => p.Loss), all.Max(p => p.Loss), 0.5);
        var xTicks = NiceTicks(ref xMin, ref xMax, 8);
        var yTicks = NiceTicks(ref yMin, ref yMax, 6);

        var canvas = new RgbCanvas(Width, Height, Background);
        int plotWidth = Width - Left - Right, plotHeight = Height - Top - Bottom;
        int X(double step) => Left + (int)Math.Round((step - xMin) / (xMax - xMin) * (plotWidth - 1));
        int Y(double loss) => Top + plotHeight - 1 - (int)Math.Round((loss - yMin) / (yMax - yMin) * (plotHeight - 1));

        DrawAxes(canvas, xTicks, yTicks, X, Y, plotWidth, plotHeight);
        DrawSeries(canvas, train.Select(p => (X(p.Step), Y(p.Loss))).ToList(), TrainColor, markers: false);
        DrawSeries(canvas, val.Select(p => (X(p.Step), Y(p.Loss))).ToList(), ValColor, markers: true);
        DrawLegend(canvas, hasTrain: train.Count > 0, hasVal: val.Count > 0);
        return canvas;
    }

    private static (double Min, double Max) Widen(double min, double max, double flatPadding)
    {
        if (max > min) return (min, max);
        double pad = Math.Max(flatPadding, Math.Abs(min) * 0.1);
        return (min - pad, max + pad);
    }

    /// <summary>Ticks at 1, 2 or 5 times a power of ten; widens [min, max] outwards to the nearest ticks.</summary>
    private static List<double> NiceTicks(ref double min, ref double max, int target)
    {
        double raw = (max - min) / target;
        double magnitude = Math.Pow(10, Math.Floor(Math.Log10(raw)));
        double normalized = raw / magnitude;
        double step = (normalized < 1.5 ? 1 : normalized < 3 ? 2 : normalized < 7 ? 5 : 10) * magnitude;
        min = Math.Floor(min / step) * step;
        max = Math.Ceiling(max / step) * step;
        var ticks = new List<double>();
        for (int i = 0; min + i * step <= max + step * 1e-9; i++)
            ticks.Add(min + i * step);
        return ticks;
    }

    private static string FormatTick(double value, double step)
    {
        if (Math.Abs(value) < step * 1e-9) value = 0; // no "-0.0"
        if (step >= 1000 && value != 0 && Math.Abs(value % 1000) < 1e-9)
            return (value / 1000).ToString("0", CultureInfo.InvariantCulture) + "k";
        int decimals = Math.Max(0, -(int)Math.Floor(Math.Log10(step) + 1e-9));
        return value.ToString("F" + decimals, CultureInfo.InvariantCulture);
    }

    private static void DrawAxes(RgbCanvas canvas, List<double> xTicks, List<double> yTicks,
        Func<double, int> x, Func<double, int> y, int plotWidth, int plotHeight)
    {
        int glyphHeight = RgbCanvas.GlyphHeight * TextScale;
        double xStep = xTicks.Count > 1 ? xTicks[1] - xTicks[0] : 1;
        foreach (var tick in xTicks)
        {
            int px = x(tick);
            canvas.FillRect(px, Top, 1, plotHeight, Grid);
            canvas.FillRect(px, Top + plotHeight, 1, 6, Axis);
            var label = FormatTick(tick, xStep);
            canvas.Text(px - RgbCanvas.MeasureText(label, TextScale) / 2, Top + plotHeight + 10, label, Axis, TextScale);
        }
        double yStep = yTicks.Count > 1 ? yTicks[1] - yTicks[0] : 1;
        foreach (var tick in yTicks)
        {
            int py = y(tick);
            canvas.FillRect(Left, py, plotWidth, 1, Grid);
            canvas.FillRect(Left - 6, py, 6, 1, Axis);
            var label = FormatTick(tick, yStep);
            canvas.Text(Left - 10 - RgbCanvas.MeasureText(label, TextScale), py - glyphHeight / 2, label, Axis, TextScale);
        }
        canvas.StrokeRect(Left, Top, plotWidth, plotHeight, Axis);

        const string xTitle = "step", yTitle = "loss";
        canvas.Text(Left + (plotWidth - RgbCanvas.MeasureText(xTitle, TextScale)) / 2, Height - glyphHeight - 8, xTitle, Axis, TextScale);
        canvas.Text(Left - RgbCanvas.MeasureText(yTitle, TextScale) / 2, Top - glyphHeight - 10, yTitle, Axis, TextScale);
    }

    private static void DrawSeries(RgbCanvas canvas, List<(int X, int Y)> points, Rgb color, bool markers)
    {
        for (int i = 1; i < points.Count; i++)
            canvas.Line(points[i - 1].X, points[i - 1].Y, points[i].X, points[i].Y, color, thickness: 2);
        if (markers || points.Count == 1) // a lone point has no segment to show it
            foreach (var (px, py) in points)
                canvas.FillRect(px - 3, py - 3, 7, 7, color);
    }

    private static void DrawLegend(RgbCanvas canvas, bool hasTrain, bool hasVal)
    {
        var entries = new List<(string Label, Rgb Color, bool Marker)>();
        if (hasTrain) entries.Add(("train loss", TrainColor, false));
        if (hasVal) entries.Add(("val loss", ValColor, true));
        if (entries.Count == 0) return; // nothing plotted, nothing to explain
        int glyphHeight = RgbCanvas.GlyphHeight * TextScale, rowHeight = glyphHeight + 10;
        int boxWidth = 44 + RgbCanvas.MeasureText("train loss", TextScale), boxHeight = entries.Count * rowHeight + 10;
        int boxX = Width - Right - boxWidth - 10, boxY = Top + 10;
        canvas.FillRect(boxX, boxY, boxWidth, boxHeight, Background);
        canvas.StrokeRect(boxX, boxY, boxWidth, boxHeight, Axis);
        for (int i = 0; i < entries.Count; i++)
        {
            var (label, color, marker) = entries[i];
            int rowY = boxY + 10 + i * rowHeight, midY = rowY + glyphHeight / 2;
            canvas.Line(boxX + 8, midY, boxX + 30, midY, color, thickness: 2);
            if (marker) canvas.FillRect(boxX + 16, midY - 3, 7, 7, color);
            canvas.Text(boxX + 36, rowY, label, Axis, TextScale);
        }
    }
}
