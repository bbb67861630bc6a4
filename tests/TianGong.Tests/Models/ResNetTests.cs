using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Models;
using TianGong.Models.Layers;
using TianGong.Models.ResNet;

namespace TianGong.Tests.Models;

/// <summary>ResNet against the transformers 5.3 fixture (bottleneck, stages [16, 32]), plus heads, BatchNorm buffers and configs.</summary>
public class ResNetTests
{
    private static readonly string Fixture = TestModels.FixturePath("hf", "resnet");

    [Fact]
    public void Feature_map_and_pooled_output_match_transformers()
    {
        using var loaded = ModelFolder.Load(Fixture);
        var encoder = Assert.IsAssignableFrom<IImageEncoder>(Assert.IsType<ResNetModel>(loaded.Module));
        var expected = Expected();
        using var _ = no_grad();
        using var pixels = BertTests.FromFixture(expected["inputs"]!["pixel_values"]!);
        using var output = encoder.EncodeImages(pixels);
        VitTests.AssertClose(BertTests.FromFixture(expected["outputs"]!["last_hidden_state"]!), output.LastHiddenState, "last_hidden_state");
        VitTests.AssertClose(BertTests.FromFixture(expected["outputs"]!["pooler_output"]!), output.PoolerOutput!, "pooler_output");
        using var features = encoder.Features(pixels);
        Assert.Equal(new long[] { 2, 32 }, features.shape);
    }

    [Fact]
    public void Running_statistics_come_from_the_checkpoint_and_training_mode_updates_them()
    {
        using var loaded = ModelFolder.Load(Fixture);
        var w = loaded.Module.state_dict();
        const string Mean = "encoder.stages.1.layers.0.shortcut.normalization.running_mean";
        Assert.True(w[Mean].abs().max().item<float>() > 0, "running_mean was loaded, not left at its zero init");
        using var before = w[Mean].clone();
        var expected = Expected();
        using var pixels = BertTests.FromFixture(expected["inputs"]!["pixel_values"]!);
        using (no_grad())
        {
            // Eval mode (what ModelFolder.Load leaves) reads the statistics and leaves them alone ...
            loaded.Module.eval();
            ((ResNetModel)loaded.Module).forward(pixels).Dispose();
            Assert.Equal(0f, (w[Mean] - before).abs().max().item<float>());
            // ... training mode normalises by the batch and moves them.
            loaded.Module.train();
            ((ResNetModel)loaded.Module).forward(pixels).Dispose();
            Assert.True((w[Mean] - before).abs().max().item<float>() > 1e-4);
        }
    }

    [Fact]
    public void Classification_head_is_classifier_1_on_the_flattened_pool()
    {
        var dir = TestModels.TempDir();
        var config = FixtureConfig() with { Architecture = ResNetConfig.ImageClassification, NumLabels = 10 };
        manual_seed(4);
        using (var model = new ResNetForImageClassification(config))
        using (var fixture = ModelFolder.Load(Fixture))
        {
            using (no_grad())
            {
                var target = model.state_dict();
                foreach (var (key, value) in fixture.Module.state_dict()) target["resnet." + key].copy_(value);
            }
            Assert.Equal(["classifier.1"], LayerReplacement.LinearLayerNames(model));
            ModelFolder.Save(dir, model, config, tokenizer: null);
        }
        using var loaded = ModelFolder.Load(dir);
        var classifier = Assert.IsAssignableFrom<IImageClassifier>(loaded.Module);
        var expected = Expected();
        using var _ = no_grad();
        using var pixels = BertTests.FromFixture(expected["inputs"]!["pixel_values"]!);
        using var logits = classifier.Classify(pixels);
        var w = loaded.Module.state_dict();
        using var pooled = BertTests.FromFixture(expected["outputs"]!["pooler_output"]!).flatten(1);
        using var want = nn.functional.linear(pooled, w["classifier.1.weight"], w["classifier.1.bias"]);
        VitTests.AssertClose(want, logits, "logits");
        // The bare trunk loads from the classification folder too (the head is left out, as transformers does).
        var bare = Path.Combine(TestModels.TempDir());
        File.Copy(Path.Combine(dir, "model.safetensors"), Path.Combine(bare, "model.safetensors"));
        File.Copy(Path.Combine(Fixture, "config.json"), Path.Combine(bare, "config.json"));
        using var trunk = ModelFolder.Load(bare);
        using var output = ((IImageEncoder)trunk.Module).EncodeImages(pixels);
        VitTests.AssertClose(BertTests.FromFixture(expected["outputs"]!["last_hidden_state"]!), output.LastHiddenState, "trunk from classifier folder");
    }

    [Fact]
    public void Basic_layers_take_28_by_28_images_and_keep_transformers_keys()
    {
        var config = new ResNetConfig(NumChannels: 1, EmbeddingSize: 8, HiddenSizes: [8, 16], Depths: [2, 1], LayerType: "basic");
        manual_seed(2);
        using var model = new ResNetModel(config);
        model.InitializeWeights();
        model.eval();
        using var _ = no_grad();
        using var output = model.EncodeImages(rand(3, 1, 28, 28));
        Assert.Equal(new long[] { 3, 16, 4, 4 }, output.LastHiddenState.shape);     // 28 → 14 → 7 → 7 → 4
        var keys = model.state_dict().Keys.ToHashSet();
        Assert.Contains("encoder.stages.0.layers.1.layer.1.normalization.running_var", keys);
        Assert.Contains("encoder.stages.1.layers.0.shortcut.convolution.weight", keys);
        Assert.DoesNotContain("encoder.stages.0.layers.0.shortcut.convolution.weight", keys);   // same width, stride 1
        Assert.DoesNotContain(keys, k => k.Contains("layer.2"));                                 // two conv layers only
    }

    [Fact]
    public void Config_reads_the_fixture_and_names_bad_fields()
    {
        var config = Assert.IsType<ResNetConfig>(ModelConfigs.Load(Path.Combine(Fixture, "config.json")));
        Assert.Equal([16, 32], config.HiddenSizes);
        Assert.Equal("bottleneck", config.LayerType);
        var e = Assert.Throws<TianGongException>(() => Parse("""{"model_type":"resnet","hidden_sizes":[8,16],"depths":[1]}"""));
        Assert.Contains("config.json: depths: must give one depth per stage", e.Message);
        e = Assert.Throws<TianGongException>(() => Parse("""{"model_type":"resnet","hidden_sizes":[8,18],"depths":[1,1]}"""));
        Assert.Contains("hidden_sizes[1]", e.Message);
        e = Assert.Throws<TianGongException>(() => Parse("""{"model_type":"resnet","layer_type":"preact"}"""));
        Assert.Contains("layer_type", e.Message);
    }

    private static ResNetConfig FixtureConfig() => new(EmbeddingSize: 16, HiddenSizes: [16, 32], Depths: [1, 1]);

    private static IModelConfig Parse(string json) => ModelConfigs.Parse(JsonNode.Parse(json), "config.json", strict: false);

    private static JsonNode Expected() => JsonNode.Parse(File.ReadAllText(Path.Combine(Fixture, "expected.json")))!;
}
