using TianGong.Training;
using Xunit;

namespace TianGong.Tests.Training;

public sealed class MetricsLogTests : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("tiangong-metrics-").FullName;
    private string LogPath => Path.Combine(dir, MetricsLog.FileName);

    public void Dispose() => Directory.Delete(dir, recursive: true);

    [Fact]
    public void Append_WritesOneFlushedJsonLinePerRecord_WithSnakeCaseNamesAndNoNulls()
    {
        using var log = MetricsLog.Create(LogPath);
        log.Append(new MetricsRecord(1, 2.5, LearningRate: 0.001));
        log.Append(new MetricsRecord(2, 2.25, ValLoss: 2.5, ValPerplexity: 12.18, LearningRate: 0.002, TokensPerSecond: 1500, ElapsedSeconds: 3.5));

        // Read while the log is still open: each line must already be on disk.
        using var reader = new StreamReader(new FileStream(LogPath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite));
        var lines = reader.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("{\"step\":1,\"train_loss\":2.5,\"lr\":0.001}", lines[0]);
        Assert.Equal("{\"step\":2,\"train_loss\":2.25,\"val_loss\":2.5,\"val_perplexity\":12.18,\"lr\":0.002,\"tokens_per_s\":1500,\"elapsed_s\":3.5}", lines[1]);
    }

    [Fact]
    public void Read_ReturnsRecordsAsWritten_IncludingNonFiniteLoss()
    {
        var written = new[]
        {
            new MetricsRecord(10, 3.0, ValLoss: 3.1, ValPerplexity: Math.Exp(3.1), LearningRate: 1e-4, TokensPerSecond: 900.5, ElapsedSeconds: 1.25),
            new MetricsRecord(20, double.NaN),
            new MetricsRecord(30, double.PositiveInfinity),
        };
        using (var log = MetricsLog.Create(LogPath))
            foreach (var record in written) log.Append(record);

        var read = MetricsLog.Read(LogPath);

        Assert.Equal(written[0], read[0]);
        Assert.True(double.IsNaN(read[1].TrainLoss));
        Assert.Equal(double.PositiveInfinity, read[2].TrainLoss);
    }

    [Fact]
    public void Resume_DropsStepsAfterTheCheckpoint_ThenAppends()
    {
        using (var log = MetricsLog.Create(LogPath))
            for (int step = 1; step <= 10; step++) log.Append(new MetricsRecord(step, 10 - step));

        using (var resumed = MetricsLog.Resume(LogPath, step: 6))
        {
            resumed.Append(new MetricsRecord(7, 0.5));
            resumed.Append(new MetricsRecord(8, 0.25));
        }

        var read = MetricsLog.Read(LogPath);
        Assert.Equal([1L, 2, 3, 4, 5, 6, 7, 8], read.Select(r => r.Step));
        Assert.Equal(0.5, read[6].TrainLoss);
        Assert.Equal([LogPath], Directory.GetFiles(dir));
    }

    [Fact]
    public void Resume_WithoutExistingFile_StartsANewLog()
    {
        using (var log = MetricsLog.Resume(LogPath, step: 100))
            log.Append(new MetricsRecord(101, 1.0));

        Assert.Equal([101L], MetricsLog.Read(LogPath).Select(r => r.Step));
    }

    [Fact]
    public void TornLastLine_IsSkipped_AndDroppedOnResume()
    {
        File.WriteAllText(LogPath, "{\"step\":1,\"train_loss\":2}\n{\"step\":2,\"train_lo");

        Assert.Equal([1L], MetricsLog.Read(LogPath).Select(r => r.Step));
        using (var resumed = MetricsLog.Resume(LogPath, step: 1))
            resumed.Append(new MetricsRecord(2, 1.5));
        Assert.Equal("{\"step\":1,\"train_loss\":2}\n{\"step\":2,\"train_loss\":1.5}\n", File.ReadAllText(LogPath));
    }

    [Theory]
    [InlineData("{\"step\":1,\"train_loss\":2}\nnot json\n{\"step\":3,\"train_loss\":1}\n", "line 2")]
    [InlineData("{\"step\":1}\n", "line 1")]
    public void DamagedLine_Throws_NamingFileAndLine(string contents, string where)
    {
        File.WriteAllText(LogPath, contents);

        var error = Assert.Throws<TianGongException>(() => MetricsLog.Read(LogPath));

        Assert.Contains(LogPath, error.Message);
        Assert.Contains(where, error.Message);
    }
}
