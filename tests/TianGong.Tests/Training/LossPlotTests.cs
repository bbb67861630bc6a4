using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using TianGong.Training;
using Xunit;

namespace TianGong.Tests.Training;

public sealed class LossPlotTests : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("tiangong-plot-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    /// <summary>CRC-32 computed bit by bit, independently of the encoder's table.</summary>
    private static uint BitwiseCrc32(ReadOnlySpan<byte> data)
    {
        uint crc = 0xFFFFFFFF;
        foreach (var b in data)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (uint)-(int)(crc & 1));
        }
        return ~crc;
    }

    [Fact]
    public void BitwiseCrc32_MatchesTheStandardCheckValue() =>
        Assert.Equal(0xCBF43926u, BitwiseCrc32("123456789"u8));

    private sealed record DecodedPng(int Width, int Height, byte[] Pixels);

    /// <summary>
    /// Decodes what <see cref="LossPlot"/> writes, checking the container on the way: signature, chunk CRCs,
    /// IHDR fields, and one filter-0 byte per row in the inflated IDAT data.
    /// </summary>
    private static DecodedPng Decode(string path)
    {
        var bytes = File.ReadAllBytes(path);
        Assert.Equal(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A }, bytes[..8]);
        int offset = 8, width = 0, height = 0;
        var idat = new MemoryStream();
        var chunkTypes = new List<string>();
        while (offset < bytes.Length)
        {
            int length = BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(offset));
            var type = Encoding.ASCII.GetString(bytes, offset + 4, 4);
            var data = bytes.AsSpan(offset + 8, length);
            uint crc = BinaryPrimitives.ReadUInt32BigEndian(bytes.AsSpan(offset + 8 + length));
            Assert.Equal(BitwiseCrc32(bytes.AsSpan(offset + 4, 4 + length)), crc);
            chunkTypes.Add(type);
            if (type == "IHDR")
            {
                width = BinaryPrimitives.ReadInt32BigEndian(data);
                height = BinaryPrimitives.ReadInt32BigEndian(data[4..]);
                Assert.Equal(new byte[] { 8, 2, 0, 0, 0 }, data[8..].ToArray()); // 8-bit RGB, deflate, no interlace
            }
            if (type == "IDAT") idat.Write(data);
            offset += 12 + length;
        }
        Assert.Equal("IHDR", chunkTypes[0]);
        Assert.Equal("IEND", chunkTypes[^1]);

        idat.Position = 0;
        using var inflated = new MemoryStream();
        using (var zlib = new ZLibStream(idat, CompressionMode.Decompress)) zlib.CopyTo(inflated);
        var raw = inflated.ToArray();
        int rowBytes = 1 + width * 3;
        Assert.Equal(height * rowBytes, raw.Length);
        var pixels = new byte[width * height * 3];
        for (int y = 0; y < height; y++)
        {
            Assert.Equal(0, raw[y * rowBytes]); // filter type None
            Array.Copy(raw, y * rowBytes + 1, pixels, y * width * 3, width * 3);
        }
        return new DecodedPng(width, height, pixels);
    }

    private static int CountPixels(DecodedPng png, (byte R, byte G, byte B) color)
    {
        int count = 0;
        for (int i = 0; i < png.Pixels.Length; i += 3)
            if (png.Pixels[i] == color.R && png.Pixels[i + 1] == color.G && png.Pixels[i + 2] == color.B) count++;
        return count;
    }

    private static (byte, byte, byte) Train => (LossPlot.TrainColor.R, LossPlot.TrainColor.G, LossPlot.TrainColor.B);
    private static (byte, byte, byte) Val => (LossPlot.ValColor.R, LossPlot.ValColor.G, LossPlot.ValColor.B);

    internal static List<MetricsRecord> DecayingRun() =>
        Enumerable.Range(0, 400).Select(i =>
        {
            long step = i * 5;
            double train = 2.0 + 6.0 * Math.Exp(-step / 300.0) + 0.15 * Math.Sin(step * 0.37);
            double? val = step % 100 == 0 ? 2.2 + 6.0 * Math.Exp(-step / 300.0) : null;
            return new MetricsRecord(step, train, ValLoss: val);
        }).ToList();

    [Fact]
    public void Save_WritesAValidPngChart_WithBothSeries()
    {
        var path = Path.Combine(dir, "loss.png");

        LossPlot.Save(path, DecayingRun());

        var png = Decode(path);
        Assert.Equal((LossPlot.Width, LossPlot.Height), (png.Width, png.Height));
        Assert.True(CountPixels(png, Train) > 1000, "train line missing");
        Assert.True(CountPixels(png, Val) > 200, "val markers missing");
        Assert.Equal([path], Directory.GetFiles(dir));
    }

    [Fact]
    public void HigherLoss_IsDrawnHigherOnTheChart()
    {
        var records = new[] { new MetricsRecord(0, 10.0), new MetricsRecord(1000, 1.0) };

        var canvas = LossPlot.Render(records);

        int TopmostTrainRow(int x)
        {
            for (int y = 0; y < canvas.Height; y++)
                if (canvas[x, y] == LossPlot.TrainColor) return y;
            return -1;
        }
        int nearStart = TopmostTrainRow(100), nearEnd = TopmostTrainRow(LossPlot.Width - 40);
        Assert.InRange(nearStart, 0, canvas.Height / 2);
        Assert.True(nearEnd > nearStart, $"line should fall from row {nearStart} towards the bottom, got {nearEnd}");
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    public void EmptyOrSinglePointInput_StillWritesAValidPng(int count)
    {
        var path = Path.Combine(dir, "loss.png");
        var records = Enumerable.Range(0, count).Select(i => new MetricsRecord(42, 3.5, ValLoss: 3.7)).ToList();

        LossPlot.Save(path, records);

        var png = Decode(path);
        Assert.Equal(LossPlot.Width, png.Width);
        Assert.Equal(count > 0, CountPixels(png, Train) > 0);
    }

    [Fact]
    public void NonFiniteLosses_AreSkipped()
    {
        var path = Path.Combine(dir, "loss.png");
        var records = new[] { new MetricsRecord(0, 5), new MetricsRecord(1, double.NaN), new MetricsRecord(2, double.PositiveInfinity), new MetricsRecord(3, 4) };

        LossPlot.Save(path, records);

        Assert.True(CountPixels(Decode(path), Train) > 0);
    }
}
