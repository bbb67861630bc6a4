using System.Text.Json.Nodes;
using TianGong.Training;
using TianGong.Vision;
using TianGong.Vision.Training;

namespace TianGong.Tests.Vision;

/// <summary>pretrain-vision on a tiny ResNet and 256 Fashion-MNIST images: every method runs, resume replays losses exactly.</summary>
// Runs seed torch's global generator: tests that draw from it in parallel would change these runs' numbers.
[Collection(nameof(TianGong.Tests.Training.GlobalRandomState))]
public class VisionPretrainingTests : IDisposable
{
    private readonly string dir = Path.Combine(Path.GetTempPath(), $"tg-vis-{Guid.NewGuid():N}");

    public void Dispose()
    {
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
    }

    public static VisionPretrainConfig TinyConfig(int maxSteps = 4, string model = "resnet") => VisionPretrainConfig.Parse(JsonNode.Parse($$"""
        {
          "model": {{(model == "resnet"
              ? """{ "model_type": "resnet", "num_channels": 1, "embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "basic" }"""
              : """{ "model_type": "vit", "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32, "image_size": 28, "patch_size": 7, "num_channels": 1 }""")}},
          "data": { "train_limit": 128, "val_images": 32 },
          "method": { "queue_size": 64, "projection_hidden": 16, "projection_dim": 8, "neighbour_warmup_steps": 1, "neighbours": 2, "scan_k": 2 },
          "training": { "batch_size": 16, "max_steps": {{maxSteps}}, "warmup_steps": 1, "eval_interval": 2, "log_interval": 1, "checkpoint_interval": 2, "seed": 5, "threads": 1 }
        }
        """)!, "tiny.json");

    // CsMI holds the most state across steps (momentum encoder, queues, memory bank): the fast suite checks it.
    [Fact]
    public void Resumed_CsMI_run_reproduces_the_losses_of_an_unbroken_one() => ResumeReproducesLosses("csmi");

    [Theory]
    [Trait("Category", "Slow")]
    [InlineData("moco")]
    [InlineData("scan")]
    public void Resumed_run_reproduces_the_losses_of_an_unbroken_one(string method) => ResumeReproducesLosses(method);

    private void ResumeReproducesLosses(string method)
    {
        var config = TinyConfig();
        var objective = ContrastiveMethods.Parse(method);
        var straight = VisionPretraining.Run(config, new VisionPretrainOptions(Path.Combine(dir, "a"), objective));
        Assert.Equal(4, straight.Steps);

        // Stop after step 2 (a checkpoint is written on cancellation), then resume to 4.
        using var stop = new CancellationTokenSource();
        var first = VisionPretraining.Run(config, new VisionPretrainOptions(Path.Combine(dir, "b"), objective),
            new PretrainCallbacks(Progress: p => { if (p.Step == 2) stop.Cancel(); }), stop.Token);
        Assert.True(first.Interrupted);
        VisionPretraining.Run(config, new VisionPretrainOptions(Path.Combine(dir, "b"), objective, Resume: true));

        var a = MetricsLog.Read(straight.MetricsPath).Select(r => r.TrainLoss).ToList();
        var b = MetricsLog.Read(Path.Combine(dir, "b", MetricsLog.FileName)).Select(r => r.TrainLoss).ToList();
        Assert.Equal(4, a.Count);
        Assert.Equal(a, b);
        Assert.True(File.Exists(Path.Combine(dir, "b", "model.safetensors")));
        Assert.True(File.Exists(Path.Combine(dir, "b", ImageProcessorConfig.FileName)));
        using var loaded = TianGong.Checkpoints.ModelFolder.Load(Path.Combine(dir, "b"));
        Assert.Equal(16, loaded.AsImageEncoder("test").FeatureSize);
    }

    [Theory]
    [InlineData("simclr", "vit")]
    [InlineData("supcon", "resnet")]
    public void Other_methods_train_and_save_a_backbone_folder(string method, string model)
    {
        var result = VisionPretraining.Run(TinyConfig(2, model), new VisionPretrainOptions(Path.Combine(dir, method), ContrastiveMethods.Parse(method)));
        Assert.False(result.Interrupted);
        Assert.True(double.IsFinite(result.FinalValLoss!.Value));
        using var loaded = TianGong.Checkpoints.ModelFolder.Load(Path.Combine(dir, method));
        Assert.Equal(model, loaded.Config.ModelType);
    }

    [Fact]
    public void Resuming_with_another_method_is_refused()
    {
        VisionPretraining.Run(TinyConfig(2), new VisionPretrainOptions(dir, ContrastiveMethod.SimClr));
        var e = Assert.Throws<TianGongException>(() => VisionPretraining.Run(TinyConfig(4), new VisionPretrainOptions(dir, ContrastiveMethod.MoCo, Resume: true)));
        Assert.Contains("--method simclr", e.Message);
    }

    [Fact]
    public void Config_errors_name_the_field()
    {
        var e = Assert.Throws<TianGongException>(() => VisionPretrainConfig.Parse(JsonNode.Parse("""{ "model": { "model_type": "llama" } }""")!, "x.json"));
        Assert.Contains("vit or resnet", e.Message);
        e = Assert.Throws<TianGongException>(() => VisionPretrainConfig.Parse(JsonNode.Parse(
            """{ "model": { "model_type": "vit", "image_size": 32, "patch_size": 8, "num_channels": 1 } }""")!, "x.json"));
        Assert.Contains("image_size", e.Message);
        e = Assert.Throws<TianGongException>(() => VisionPretrainConfig.Parse(JsonNode.Parse(
            """{ "model": { "model_type": "resnet", "num_channels": 1 }, "method": { "temperature": 0 } }""")!, "x.json"));
        Assert.Contains("method.temperature", e.Message);
        Assert.Contains("--method", Assert.Throws<TianGongException>(() => ContrastiveMethods.Parse("byol")).Message);
    }

    [Fact]
    public void Shipped_configs_parse()
    {
        var root = AppContext.BaseDirectory;
        while (!Directory.Exists(Path.Combine(root, "configs"))) root = Path.GetDirectoryName(root.TrimEnd(Path.DirectorySeparatorChar))!;
        foreach (var name in new[] { "fashion-resnet.json", "fashion-vit.json" })
        {
            var config = VisionPretrainConfig.Load(Path.Combine(root, "configs", name));
            Assert.Equal(28, config.Data.ImageSize);
        }
    }
}
