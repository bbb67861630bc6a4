using TianGong.Vision;

namespace TianGong.Tests.Vision;

/// <summary>Epoch batches, few-label subsets, the kNN classifier and the processor file round trip.</summary>
public class SamplingTests
{
    [Fact]
    public void Each_epoch_is_a_permutation_and_a_resumed_sampler_gives_the_same_batches()
    {
        var sampler = new EpochSampler(count: 10, batchSize: 3, seed: 5);
        Assert.Equal(3, sampler.StepsPerEpoch);                                              // the 10th sample waits for the next epoch
        var epoch0 = Enumerable.Range(0, 3).SelectMany(s => sampler.Indices(s).data<long>().ToArray()).ToList();
        var epoch1 = Enumerable.Range(3, 3).SelectMany(s => sampler.Indices(s).data<long>().ToArray()).ToList();
        Assert.Equal(9, epoch0.Distinct().Count());
        Assert.Equal(9, epoch1.Distinct().Count());
        Assert.All(epoch0, i => Assert.InRange(i, 0, 9));
        Assert.NotEqual(epoch0, epoch1);
        var resumed = new EpochSampler(10, 3, 5);
        Assert.Equal(sampler.Indices(4).data<long>().ToArray(), resumed.Indices(4).data<long>().ToArray());
        Assert.NotEqual(sampler.Indices(4).data<long>().ToArray(), new EpochSampler(10, 3, 6).Indices(4).data<long>().ToArray());
        Assert.Contains("batch_size", Assert.Throws<TianGongException>(() => new EpochSampler(2, 3, 0)).Message);
    }

    [Fact]
    public void Few_label_subsets_take_the_same_share_of_every_class()
    {
        using var labels = tensor(Enumerable.Range(0, 600).Select(i => (long)(i % 3 == 0 ? 0 : i % 3 == 1 ? 1 : 2)).ToArray());
        using var tenth = LabelSubsets.Balanced(labels, 0.1, seed: 1);
        Assert.Equal(new long[] { 20, 20, 20 }, labels.index_select(0, tenth).bincount(null).data<long>().ToArray());
        using var onePercent = LabelSubsets.Balanced(labels, 0.01, seed: 1);
        Assert.Equal(new long[] { 2, 2, 2 }, labels.index_select(0, onePercent).bincount(null).data<long>().ToArray());
        using var tiny = LabelSubsets.Balanced(labels, 0.001, seed: 1);
        Assert.Equal(3, tiny.shape[0]);                                                      // never an empty class
        Assert.Equal(tenth.data<long>().ToArray(), LabelSubsets.Balanced(labels, 0.1, 1).data<long>().ToArray());
        Assert.NotEqual(tenth.data<long>().ToArray(), LabelSubsets.Balanced(labels, 0.1, 2).data<long>().ToArray());
        Assert.Throws<TianGongException>(() => LabelSubsets.Balanced(labels, 0, 1));
    }

    [Fact]
    public void KNN_votes_with_exp_similarity_over_the_k_nearest()
    {
        static Tensor At(params double[] degrees) => tensor(degrees.SelectMany(d => new[] { (float)Math.Cos(d * Math.PI / 180), (float)Math.Sin(d * Math.PI / 180) }).ToArray(), [degrees.Length, 2]);
        using var bank = At(0, 10, 90, 100);
        using var labels = tensor(new long[] { 0, 0, 1, 1 });
        // 30°: neighbours 10° (cos 20°), 0° (cos 30°), 90° (cos 60°): class 0 has two votes of e^0.94 and e^0.87 vs e^0.5.
        // 70°: 90° (cos 20°), 100° (cos 30°), 10° (cos 60°): class 1. 45° with k = 1: 10° (35° away) beats 90° (45°): class 0.
        using var queries = At(30, 70, 45);
        Assert.Equal(new long[] { 0, 1 }, KnnClassifier.Predict(bank, labels, queries[..2], 3, 1.0, 2).data<long>().ToArray());
        Assert.Equal(0L, KnnClassifier.Predict(bank, labels, queries[2..], 1, 1.0, 2).item<long>());
        // Weights, not counts: k = 4 at 60° has two votes each; exp(cos/τ) with τ = 0.1 favours the closer class 1 (30°, 40°).
        Assert.Equal(1L, KnnClassifier.Predict(bank, labels, At(60), 4, 0.1, 2).item<long>());
        Assert.Equal(2.0 / 3, KnnClassifier.Accuracy(bank, labels, queries, tensor(new long[] { 0, 1, 1 }), 3, 1.0, 2), 5);
        // Chunking changes nothing.
        Assert.Equal(KnnClassifier.Predict(bank, labels, queries, 3, 1.0, 2).data<long>().ToArray(),
            KnnClassifier.Predict(bank, labels, queries, 3, 1.0, 2, chunk: 1).data<long>().ToArray());
    }

    [Fact]
    public void Processor_config_round_trips_and_images_scale_to_the_unit_range()
    {
        var path = Path.Combine(TestModels.TempDir(), ImageProcessorConfig.FileName);
        new ImageProcessorConfig(ImageProcessorType: "ViTImageProcessor", Size: new ImageSize(28, 28), ImageMean: [0.286], ImageStd: [0.353]).Save(path);
        var processor = ImageProcessor.Load(path);
        Assert.Equal((28, 28), (processor.Size.Height!.Value, processor.Size.Width!.Value));
        Assert.Equal([0.286], processor.ImageMean);
        Assert.True(processor.DoRescale);
        Assert.Contains("\"image_processor_type\": \"ViTImageProcessor\"", File.ReadAllText(path));
        Assert.NotNull(ImageProcessor.FromFolder(Path.GetDirectoryName(path)!));
        Assert.Null(ImageProcessor.FromFolder(TestModels.TempDir()));

        using var images = new LabelledImages(tensor(new byte[] { 0, 255, 51, 102 }, [2, 1, 1, 2]), tensor(new long[] { 3, 4 }), ["a"]);
        using var pixels = images.Pixels(tensor(new long[] { 1 }));
        Assert.Equal(new[] { 0.2f, 0.4f }, pixels.data<float>().ToArray());
        using var subset = images.Subset(tensor(new long[] { 1 }));
        Assert.Equal(4L, subset.Labels.item<long>());
    }
}
