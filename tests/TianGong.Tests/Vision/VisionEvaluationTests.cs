using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Models.Vit;
using TianGong.Tests.Cli;
using TianGong.Vision;
using TianGong.Vision.Training;

namespace TianGong.Tests.Vision;

/// <summary>eval-vision's judgements and embed's image side on tiny models.</summary>
// Runs seed torch's global generator: tests that draw from it in parallel would change these runs' numbers.
[Collection(nameof(TianGong.Tests.Training.GlobalRandomState))]
public class VisionEvaluationTests : IDisposable
{
    private readonly string dir = Path.Combine(Path.GetTempPath(), $"tg-visev-{Guid.NewGuid():N}");

    public void Dispose()
    {
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
    }

    private static ViTConfig TinyVit(string? architecture = null) => new(HiddenSize: 32, NumHiddenLayers: 1, NumAttentionHeads: 2, IntermediateSize: 64,
        ImageSize: 28, PatchSize: 7, NumChannels: 1, NumLabels: architecture is null ? null : 3, Architecture: architecture);

    private static readonly ImageProcessor FashionProcessor = new(VisionPretrainingTests.TinyConfig().Processor);

    private static (LabelledImages Train, LabelledImages Test) Fashion(int train, int test)
    {
        var data = new VisionDataSection();
        var callbacks = new TianGong.Training.PretrainCallbacks();
        return (VisionPretraining.LoadSplit(data, "train", 1, null, callbacks, train), VisionPretraining.LoadSplit(data, "test", 1, null, callbacks, test));
    }

    [Fact]
    [Trait("Category", "Slow")]
    public void Linear_probe_on_a_frozen_random_network_is_far_below_one_on_a_trained_network()
    {
        var (train, test) = Fashion(1000, 500);
        using (train)
        using (test)
        {
            manual_seed(4);
            using var model = (ViTModel)VisionPretraining.NewBackbone(TinyVit());
            var probe = new VisionEvalOptions(VisionEvalMode.LinearProbe, Epochs: 10, Seed: 1);
            double random = VisionEvaluation.Run(model, FashionProcessor, train, test, probe).Accuracy;
            // Brief supervised training (fine-tuning changes the backbone's weights in place), then the same probe.
            VisionEvaluation.Run(model, FashionProcessor, train, test, new VisionEvalOptions(VisionEvalMode.Finetune, Epochs: 8, LearningRate: 2e-3, Seed: 1));
            double trained = VisionEvaluation.Run(model, FashionProcessor, train, test, probe).Accuracy;
            Assert.True(trained > random + 0.1, $"probe on random features {random:P1}, on trained features {trained:P1}");
        }
    }

    [Fact]
    public void Few_label_fine_tuning_sees_a_balanced_share_and_knn_reads_the_whole_pool()
    {
        var (train, test) = Fashion(200, 50);
        using (train)
        using (test)
        {
            manual_seed(4);
            using var model = VisionPretraining.NewBackbone(TinyVit());
            var finetune = VisionEvaluation.Run(model, FashionProcessor, train, test, new VisionEvalOptions(VisionEvalMode.Finetune, LabelFraction: 0.1, Epochs: 1));
            Assert.Equal(20, finetune.TrainImages);                                            // 2 of each of the 10 classes
            Assert.Equal(50, finetune.TestImages);
            Assert.InRange(finetune.Accuracy, 0, 1);
            var knn = VisionEvaluation.Run(model, FashionProcessor, train, test, new VisionEvalOptions(VisionEvalMode.Knn, K: 5));
            Assert.Equal(200, knn.TrainImages);
            Assert.True(knn.Accuracy > 0.3, $"kNN on 200 images: {knn.Accuracy:P1}");          // chance is 10%
        }
    }

    [Fact]
    public void Embed_pixel_values_prints_the_pooler_output_and_logits()
    {
        manual_seed(9);
        using var model = (ViTForImageClassification)VisionPretraining.NewBackbone(TinyVit(ViTConfig.ImageClassification));
        model.eval();
        ModelFolder.Save(dir, model, TinyVit(ViTConfig.ImageClassification), null);
        using var pixels = randn(2, 1, 28, 28);
        var file = Path.Combine(dir, "pixels.safetensors");
        SafeTensors.Save(file, new Dictionary<string, Tensor> { [ImageEmbedding.PixelValuesName] = pixels });

        var result = CliProcess.Run(dir, "embed", "--model", dir, "--pixel-values", file, "--pooling", "cls", "--json");
        Assert.True(result.ExitCode == 0, result.All);
        var json = JsonNode.Parse(result.Stdout)!;
        using var _ = no_grad();
        using var output = model.EncodeImages(pixels);
        using var logits = model.Classify(pixels);
        for (int b = 0; b < 2; b++)
        {
            var cls = output.LastHiddenState[b, 0].data<float>().ToArray();
            var printed = json["embeddings"]![b]!.AsArray().Select(x => x!.GetValue<float>()).ToArray();
            Assert.Equal(cls.Length, printed.Length);
            for (int i = 0; i < cls.Length; i++) Assert.Equal(cls[i], printed[i], 1e-5f);
            var printedLogits = json["logits"]![b]!.AsArray().Select(x => x!.GetValue<float>()).ToArray();
            Assert.Equal(logits[b].data<float>().ToArray(), printedLogits, (x, y) => Math.Abs(x - y) < 1e-5);
        }

        var bad = CliProcess.Run(dir, "embed", "--model", dir, "--text", "hello", "--pixel-values", file);
        Assert.Contains("exactly one of --text, --ids, --image or --pixel-values", bad.Stderr);
        var notVision = CliProcess.Run(dir, "eval-vision", "--model", dir);
        Assert.Contains("exactly one of --linear-probe, --finetune or --knn", notVision.Stderr);
    }

    [Fact]
    public void Embed_image_files_match_pixel_values_made_by_the_folders_processor()
    {
        manual_seed(9);
        using var model = (ViTModel)VisionPretraining.NewBackbone(TinyVit());
        model.eval();
        ModelFolder.Save(dir, model, TinyVit(), null);
        VisionPretrainingTests.TinyConfig().Processor.Save(Path.Combine(dir, ImageProcessorConfig.FileName));
        var png = Path.Combine(dir, "shirt.png");
        using (var bitmap = new SkiaSharp.SKBitmap(28, 28, SkiaSharp.SKColorType.Gray8, SkiaSharp.SKAlphaType.Opaque))
        {
            for (int y = 0; y < 28; y++) for (int x = 0; x < 28; x++) bitmap.SetPixel(x, y, new SkiaSharp.SKColor((byte)(x * 9), (byte)(x * 9), (byte)(x * 9)));
            using var stream = File.Create(png);
            bitmap.Encode(stream, SkiaSharp.SKEncodedImageFormat.Png, 100);
        }
        var result = CliProcess.Run(dir, "embed", "--model", dir, "--image", png, "--pooling", "pooler", "--json");
        Assert.True(result.ExitCode == 0, result.All);
        var printed = JsonNode.Parse(result.Stdout)!["embeddings"]![0]!.AsArray().Select(x => x!.GetValue<float>()).ToArray();
        using var _ = no_grad();
        using var pixels = FashionProcessor.Preprocess(ImageFolder.Read(png, 1));
        var expected = ImageEmbedding.Embed(model, pixels, TianGong.Models.Pooling.Pooler)[0];
        Assert.Equal(expected, printed, (x, y) => Math.Abs(x - y) < 1e-5);
    }
}
