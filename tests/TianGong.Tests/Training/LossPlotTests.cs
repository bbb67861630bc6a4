using SkiaSharp;
using TianGong.Training;
using Xunit;

namespace TianGong.Tests.Training;

public sealed class LossPlotTests : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("tiangong-plot-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    private static SKBitmap Decode(string path) =>
        SKBitmap.Decode(path) ?? throw new InvalidDataException($"{path} is not an image SkiaSharp can decode");

    /// <summary>Pixels close to <paramref name="color"/> (lines are anti-aliased, so their centre is near, not always equal).</summary>
    private static List<(int X, int Y)> PixelsOf(SKBitmap image, ScottPlot.Color color, int tolerance = 24)
    {
        var found = new List<(int, int)>();
        for (int y = 0; y < image.Height; y++)
            for (int x = 0; x < image.Width; x++)
            {
                var p = image.GetPixel(x, y);
                if (Math.Abs(p.Red - color.R) + Math.Abs(p.Green - color.G) + Math.Abs(p.Blue - color.B) <= tolerance) found.Add((x, y));
            }
        return found;
    }

    internal static List<MetricsRecord> DecayingRun() =>
        Enumerable.Range(0, 400).Select(i =>
        {
            long step = i * 5;
            double train = 2.0 + 6.0 * Math.Exp(-step / 300.0) + 0.15 * Math.Sin(step * 0.37);
            double? val = step % 100 == 0 ? 2.2 + 6.0 * Math.Exp(-step / 300.0) : null;
            double lr = step < 100 ? 3e-3 * (step + 1) / 100 : 3e-4 + 0.5 * (1 + Math.Cos(Math.PI * (step - 100) / 1900.0)) * 2.7e-3;
            return new MetricsRecord(step, train, ValLoss: val, LearningRate: lr);
        }).ToList();

    [Fact]
    public void Save_writes_a_png_chart_with_train_validation_and_learning_rate_curves()
    {
        var path = Path.Combine(dir, "loss.png");

        LossPlot.Save(path, DecayingRun());

        using var png = Decode(path);
        Assert.Equal((LossPlot.Width, LossPlot.Height), (png.Width, png.Height));
        Assert.True(PixelsOf(png, LossPlot.TrainColor).Count > 1000, "train line missing");
        Assert.True(PixelsOf(png, LossPlot.ValColor).Count > 200, "validation line and markers missing");
        Assert.True(PixelsOf(png, LossPlot.LearningRateColor).Count > 300, "learning-rate line missing");
        Assert.Equal([path], Directory.GetFiles(dir)); // no temporary file left beside it
    }

    [Fact]
    public void Higher_loss_is_drawn_higher_on_the_chart()
    {
        var path = Path.Combine(dir, "loss.png");
        LossPlot.Save(path, [new MetricsRecord(0, 10.0), new MetricsRecord(1000, 1.0)]);
        using var png = Decode(path);
        var train = PixelsOf(png, LossPlot.TrainColor);

        int Topmost(int x) => train.Where(p => Math.Abs(p.X - x) <= 1).Select(p => p.Y).DefaultIfEmpty(-1).Min();
        int early = Topmost(png.Width / 4), late = Topmost(png.Width * 3 / 5);
        Assert.True(early > 0 && late > 0, $"line not found at both columns ({early}, {late})");
        Assert.True(late > early + 50, $"the line should fall from row {early} to a lower row, got {late}");
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    public void Empty_or_single_point_input_still_writes_a_png(int count)
    {
        var path = Path.Combine(dir, "loss.png");
        var records = Enumerable.Range(0, count).Select(_ => new MetricsRecord(42, 3.5, ValLoss: 3.7)).ToList();

        LossPlot.Save(path, records);

        using var png = Decode(path);
        Assert.Equal(LossPlot.Width, png.Width);
        Assert.Equal(count > 0, PixelsOf(png, LossPlot.TrainColor).Count > 0);
    }

    [Fact]
    public void Non_finite_losses_are_left_out()
    {
        var path = Path.Combine(dir, "loss.png");
        LossPlot.Save(path, [new MetricsRecord(0, 5), new MetricsRecord(1, double.NaN), new MetricsRecord(2, double.PositiveInfinity), new MetricsRecord(3, 4)]);

        using var png = Decode(path);
        Assert.True(PixelsOf(png, LossPlot.TrainColor).Count > 0);
    }
}
