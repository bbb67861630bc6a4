using TianGong.Checkpoints;
using TianGong.Compression.Extraction;

namespace TianGong.Tests.Compression;

public class ExtractionTests
{
    [Theory]
    [InlineData("llama", "model.layers.{0}.mlp.down_proj.weight")]
    [InlineData("gpt2", "transformer.h.{0}.mlp.c_fc.weight")]
    public void The_extracted_folder_loads_with_the_chosen_blocks_renumbered(string family, string keyPattern)
    {
        var output = Path.Combine(TestModels.TempDir(), "one-layer");
        LayerExtraction.Extract(TestModels.FixturePath("hf", family), output, [1]);
        using var source = ModelFolder.Load(TestModels.FixturePath("hf", family));
        using var extracted = ModelFolder.Load(output);
        Assert.Equal(1, LayerExtraction.LayerCount(ConfigJson.ReadFile(Path.Combine(output, "config.json")), output));
        var key0 = string.Format(keyPattern, 0);
        var was1 = source.Module.state_dict()[string.Format(keyPattern, 1)];
        Assert.Equal(0, (extracted.Module.state_dict()[key0] - was1).abs().max().item<float>());
        Assert.DoesNotContain(string.Format(keyPattern, 1), extracted.Module.state_dict().Keys);
        using var ids = randint(0, 64, [1, 6]);
        using var _ = no_grad();
        using var logits = extracted.AsCausalLM("test").forward(ids);
        Assert.False(logits.isnan().any().item<bool>());
    }

    [Fact]
    public void Evenly_spread_layers_include_the_first_and_last()
    {
        Assert.Equal([0, 4, 7], LayerExtraction.Evenly(8, 3));
        Assert.Equal([0], LayerExtraction.Evenly(8, 1));
    }

    [Fact]
    public void Removing_every_layer_or_naming_a_missing_one_is_an_error()
    {
        var dir = TestModels.FixturePath("hf", "llama");
        var output = Path.Combine(TestModels.TempDir(), "x");
        Assert.Contains("remove every layer", Assert.Throws<TianGongException>(() => LayerExtraction.Extract(dir, output, [])).Message);
        Assert.Contains("there is no layer 5", Assert.Throws<TianGongException>(() => LayerExtraction.Extract(dir, output, [0, 5])).Message);
        Assert.Contains("twice", Assert.Throws<TianGongException>(() => LayerExtraction.Extract(dir, output, [1, 1])).Message);
        Assert.Contains("model_type 't5'", Assert.Throws<TianGongException>(() => LayerExtraction.Extract(TestModels.FixturePath("hf", "t5"), output, [0])).Message);
        Assert.Contains("at most 2", Assert.Throws<TianGongException>(() => LayerExtraction.Evenly(2, 3)).Message);
    }

    [Fact]
    public void The_extract_command_keeps_evenly_spread_layers()
    {
        var output = Path.Combine(TestModels.TempDir(), "half");
        var result = Cli.CliProcess.Run(TestModels.TempDir(), "extract", "--model", TestModels.FixturePath("hf", "llama"), "--keep-layers", "1", "--out", output);
        Assert.True(result.ExitCode == 0, result.All);
        Assert.Contains("kept layers 0 of 2", result.Stdout);
        var both = Cli.CliProcess.Run(TestModels.TempDir(), "extract", "--model", TestModels.FixturePath("hf", "llama"), "--keep-layers", "1", "--layers", "0", "--out", output);
        Assert.Equal(1, both.ExitCode);
        Assert.Contains("exactly one of --layers and --keep-layers", both.Stderr);
    }
}
