using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Models;
using TianGong.Models.Layers;
using TianGong.Models.Vit;

namespace TianGong.Tests.Models;

/// <summary>ViT against the transformers 5.3 fixture (ViTModel, patch 8, 32×32), plus the classification head and config checks.</summary>
public class VitTests
{
    private static readonly string Fixture = TestModels.FixturePath("hf", "vit");

    [Fact]
    public void Hidden_states_and_pooler_output_match_transformers()
    {
        using var loaded = ModelFolder.Load(Fixture);
        var encoder = Assert.IsAssignableFrom<IImageEncoder>(Assert.IsType<ViTModel>(loaded.Module));
        var expected = Expected();
        using var _ = no_grad();
        using var pixels = BertTests.FromFixture(expected["inputs"]!["pixel_values"]!);
        using var output = encoder.EncodeImages(pixels);
        AssertClose(BertTests.FromFixture(expected["outputs"]!["last_hidden_state"]!), output.LastHiddenState, "last_hidden_state");
        AssertClose(BertTests.FromFixture(expected["outputs"]!["pooler_output"]!), output.PoolerOutput!, "pooler_output");
        using var features = encoder.Features(pixels);
        AssertClose(output.LastHiddenState.select(1, 0), features, "features are the [CLS] state");
    }

    [Fact]
    public void Classification_logits_are_the_classifier_on_the_CLS_state_of_the_same_trunk()
    {
        var dir = TestModels.TempDir();
        var config = FixtureConfig() with { Architecture = ViTConfig.ImageClassification, NumLabels = 5 };
        manual_seed(3);
        using (var model = new ViTForImageClassification(config))
        using (var fixture = ModelFolder.Load(Fixture))
        {
            using (no_grad())
            {
                var target = model.state_dict();
                // The fixture's ViTModel trunk goes under vit.*; its pooler has no place in the classifier.
                foreach (var (key, value) in fixture.Module.state_dict())
                    if (!key.StartsWith("pooler.")) target["vit." + key].copy_(value);
            }
            var linear = LayerReplacement.LinearLayerNames(model);
            Assert.Contains("vit.encoder.layer.0.attention.attention.query", linear);
            Assert.Contains("classifier", linear);
            ModelFolder.Save(dir, model, config, tokenizer: null);
        }
        var saved = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!;
        Assert.Equal("ViTForImageClassification", saved["architectures"]![0]!.GetValue<string>());
        Assert.Equal(5, saved["num_labels"]!.GetValue<int>());

        using var loaded = ModelFolder.Load(dir);
        var classifier = Assert.IsAssignableFrom<IImageClassifier>(loaded.Module);
        Assert.Equal(5, classifier.NumLabels);
        var expected = Expected();
        using var _ = no_grad();
        using var pixels = BertTests.FromFixture(expected["inputs"]!["pixel_values"]!);
        using var logits = classifier.Classify(pixels);
        var w = loaded.Module.state_dict();
        using var cls = BertTests.FromFixture(expected["outputs"]!["last_hidden_state"]!).select(1, 0);
        using var want = nn.functional.linear(cls, w["classifier.weight"], w["classifier.bias"]);
        AssertClose(want, logits, "logits");
        Assert.Null(classifier.EncodeImages(pixels).PoolerOutput);
    }

    [Fact]
    public void Keys_are_transformers_keys_and_every_projection_is_replaceable()
    {
        using var model = new ViTModel(FixtureConfig());
        using var fixture = ModelFolder.Load(Fixture);
        Assert.Equal(fixture.Module.state_dict().Keys.Order(), model.state_dict().Keys.Order());
        // Six projections per layer plus the pooler; the patch convolution is not a linear layer.
        Assert.Equal(2 * 6 + 1, LayerReplacement.LinearLayerNames(model).Count);
    }

    [Fact]
    public void Fresh_weights_follow_transformers_init()
    {
        manual_seed(1);
        using var model = new ViTForImageClassification(FixtureConfig() with { Architecture = ViTConfig.ImageClassification, NumLabels = 3 });
        model.InitializeWeights();
        var w = model.state_dict();
        Assert.InRange(w["vit.embeddings.position_embeddings"].std().item<float>(), 0.015, 0.025);
        Assert.InRange(w["vit.encoder.layer.0.attention.attention.query.weight"].std().item<float>(), 0.015, 0.025);
        Assert.Equal(0f, w["vit.encoder.layer.0.attention.attention.query.bias"].abs().max().item<float>());
        Assert.Equal(1f, w["vit.layernorm.weight"].min().item<float>());
        Assert.InRange(w["classifier.weight"].std().item<float>(), 0.01, 0.03);
    }

    [Fact]
    public void Config_reads_the_fixture_and_names_bad_fields()
    {
        var config = Assert.IsType<ViTConfig>(ModelConfigs.Load(Path.Combine(Fixture, "config.json")));
        Assert.Equal((64, 2, 4, 32, 8, 16), (config.HiddenSize, config.NumHiddenLayers, config.NumAttentionHeads, config.ImageSize, config.PatchSize, config.NumPatches));
        Assert.Equal(ViTConfig.BaseModel, config.Architecture);
        var e = Assert.Throws<TianGongException>(() => Parse("""{"model_type":"vit","image_size":30,"patch_size":8}"""));
        Assert.Contains("config.json: patch_size: must divide image_size (30)", e.Message);
        e = Assert.Throws<TianGongException>(() => Parse("""{"model_type":"vit","architectures":["ViTForMaskedImageModeling"]}"""));
        Assert.Contains("architectures", e.Message);
        e = Assert.Throws<TianGongException>(() => Parse("""{"model_type":"vit","num_labels":3,"id2label":{"0":"a","1":"b"}}"""));
        Assert.Contains("num_labels: 3 disagrees with id2label", e.Message);
        e = Assert.Throws<TianGongException>(() => Parse("""{"model_type":"vit","id2label":{"0":"a","2":"b"}}"""));
        Assert.Contains("id2label", e.Message);
        Assert.Equal(3, ((ViTConfig)Parse("""{"model_type":"vit","id2label":{"0":"a","1":"b","2":"c"}}""")).Classes);
        e = Assert.Throws<TianGongException>(() => ModelConfigs.Parse(JsonNode.Parse("""{"model_type":"vit","hiden_size":8}"""), "cfg", strict: true));
        Assert.Contains("unknown field 'hiden_size'", e.Message);
    }

    [Fact]
    public void Images_of_the_wrong_size_are_refused_with_the_expected_shape()
    {
        using var model = new ViTModel(FixtureConfig());
        using var pixels = zeros(1, 3, 28, 28);
        var e = Assert.Throws<TianGongException>(() => model.EncodeImages(pixels));
        Assert.Contains("(B, 3, 32, 32)", e.Message);
    }

    internal static ViTConfig FixtureConfig() => new(
        HiddenSize: 64, NumHiddenLayers: 2, NumAttentionHeads: 4, IntermediateSize: 128, ImageSize: 32, PatchSize: 8);

    private static IModelConfig Parse(string json) => ModelConfigs.Parse(JsonNode.Parse(json), "config.json", strict: false);

    private static JsonNode Expected() => JsonNode.Parse(File.ReadAllText(Path.Combine(Fixture, "expected.json")))!;

    internal static void AssertClose(Tensor expected, Tensor actual, string what)
    {
        Assert.Equal(expected.shape, actual.shape);
        double maxDiff = (actual - expected).abs().max().item<float>();
        Assert.True(maxDiff < 1e-4, $"{what}: max |ours - transformers| = {maxDiff}");
    }
}
