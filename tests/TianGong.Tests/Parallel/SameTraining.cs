using TianGong.Checkpoints;
using TianGong.Training;

namespace TianGong.Tests.Parallel;

/// <summary>What the multi-rank job tests compare a parallel run against one process by: its logged losses and its saved weights.</summary>
internal static class SameTraining
{
    public static List<MetricsRecord> Metrics(string runDir) => MetricsLog.Read(Path.Combine(runDir, MetricsLog.FileName)).ToList();

    /// <summary>The same steps, with train and validation losses equal to 1e-5.</summary>
    public static void AssertSameLosses(List<MetricsRecord> expected, List<MetricsRecord> actual)
    {
        Assert.Equal(expected.Select(m => m.Step), actual.Select(m => m.Step));
        for (int i = 0; i < expected.Count; i++)
        {
            Assert.Equal(expected[i].TrainLoss, actual[i].TrainLoss, 1e-5);
            if (expected[i].ValLoss is { } v) Assert.Equal(v, actual[i].ValLoss!.Value, 1e-5);
        }
    }

    /// <summary>The same tensor names and shapes in two safetensors files, every element within <paramref name="tolerance"/>.</summary>
    public static void AssertSameWeights(string expectedPath, string actualPath, double tolerance)
    {
        var expected = SafeTensors.Load(expectedPath);
        var actual = SafeTensors.Load(actualPath);
        Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
        foreach (var (name, t) in expected)
        {
            Assert.Equal(t.shape, actual[name].shape);
            double diff = (t - actual[name]).abs().max().item<float>();
            Assert.True(diff < tolerance, $"{name}: max difference {diff}");
        }
    }
}
