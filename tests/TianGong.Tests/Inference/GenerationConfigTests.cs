using System.Text.Json.Nodes;
using TianGong.Inference;

namespace TianGong.Tests.Inference;

public class GenerationConfigTests
{
    private static GenerationConfig Parse(string json) => GenerationConfig.Parse(JsonNode.Parse(json)!, "generation_config.json");

    [Fact]
    public void Without_do_sample_the_folder_means_greedy_whatever_its_temperature()
    {
        var options = Parse("""{"temperature": 0.6, "top_p": 0.9, "max_new_tokens": 12, "eos_token_id": 2, "transformers_version": "5.3.0"}""").ToSamplingOptions();
        Assert.True(options.IsGreedy);
        Assert.Equal((12, 0, 1.0), (options.MaxNewTokens, options.TopK, options.TopP));
        Assert.Equal([2], options.EosTokenIds!);
        Assert.True(new GenerationConfig().ToSamplingOptions().IsGreedy);     // a folder without the file: HF's defaults
    }

    [Fact]
    public void With_do_sample_the_folder_values_and_hf_defaults_for_the_rest()
    {
        var options = Parse("""{"do_sample": true, "temperature": 0.6, "repetition_penalty": 1.2, "min_new_tokens": 3, "eos_token_id": [128001, 128009], "bos_token_id": 1, "pad_token_id": null}""").ToSamplingOptions();
        Assert.Equal((0.6, GenerationConfig.DefaultTopK, 1.0, 1.2, 3), (options.Temperature, options.TopK, options.TopP, options.RepetitionPenalty, options.MinNewTokens));
        Assert.Equal([128001, 128009], options.EosTokenIds!);
        Assert.Equal(GenerationConfig.DefaultMaxNewTokens, options.MaxNewTokens);
    }

    [Fact]
    public void Given_values_override_the_folder_and_a_given_temperature_decides_do_sample()
    {
        var folder = Parse("""{"do_sample": false, "temperature": 0.6, "top_k": 20, "max_new_tokens": 12}""");
        var sampled = folder.OverriddenBy(new GenerationConfig(Temperature: 0.9, MaxNewTokens: 5)).ToSamplingOptions();
        Assert.Equal((0.9, 20, 5), (sampled.Temperature, sampled.TopK, sampled.MaxNewTokens));
        var greedy = Parse("""{"do_sample": true, "temperature": 0.6}""").OverriddenBy(new GenerationConfig(Temperature: 0)).ToSamplingOptions();
        Assert.True(greedy.IsGreedy);
        var kept = folder.OverriddenBy(new GenerationConfig(TopK: 3)).ToSamplingOptions();
        Assert.True(kept.IsGreedy);                                           // top_k alone does not switch sampling on, as in HF
    }

    [Theory]
    [InlineData(-1.0, "generate: temperature")]   // before: taken as "greedy" by OverriddenBy, never range-checked
    [InlineData(101.0, "generate: temperature")]
    public void Given_values_get_the_files_range_checks(double temperature, string message)
    {
        var error = Assert.Throws<TianGongException>(() => new GenerationConfig(Temperature: temperature).Validated("generate"));
        Assert.StartsWith(message, error.Message);
        Assert.Equal(0.5, new GenerationConfig(Temperature: 0.5).Validated("generate").Temperature);
    }

    [Theory]
    [InlineData("""{"eos_token_id": "two"}""", "field 'eos_token_id' must be an integer or a list of integers")]
    [InlineData("""{"temperature": -1}""", "temperature: must be in [0, 100], got -1")]
    [InlineData("""{"top_k": "many"}""", "field 'top_k' has the wrong type")]
    [InlineData("""[1]""", "expected a JSON object")]
    public void A_malformed_file_is_a_clear_error(string json, string message) =>
        Assert.Contains(message, Assert.Throws<TianGongException>(() => Parse(json)).Message);

    [Fact]
    public void Load_reads_the_folders_file_and_treats_a_missing_one_as_empty()
    {
        var dir = TestModels.TempDir();
        Assert.Null(GenerationConfig.Read(dir));
        Assert.Equal(new GenerationConfig(), GenerationConfig.Load(dir));
        File.WriteAllText(Path.Combine(dir, GenerationConfig.FileName), """{"do_sample": true, "top_p": 0.5}""");
        Assert.Equal(0.5, GenerationConfig.Load(dir).ToSamplingOptions().TopP);
    }
}
