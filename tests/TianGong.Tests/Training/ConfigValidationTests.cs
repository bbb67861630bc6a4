using System.Text.Json.Nodes;
using TianGong.Models;
using TianGong.Training;

namespace TianGong.Tests.Training;

public class ConfigValidationTests
{
    private static JsonObject Valid() => TrainingTests.TinyConfig("corpus.txt");

    private static string ErrorOf(JsonObject config) =>
        Assert.Throws<TianGongException>(() => PretrainConfig.Parse(config, "cfg.json")).Message;

    [Fact]
    public void A_valid_config_parses_with_the_given_values()
    {
        var c = PretrainConfig.Parse(Valid(), "cfg.json");
        Assert.Equal("llama", c.Model.ModelType);
        Assert.Equal(32, c.Training.SeqLen);
        Assert.Equal(0.01, c.Training.LearningRate);
        Assert.Equal(300, c.Tokenizer.VocabSize);
    }

    [Fact]
    public void Unknown_fields_are_named_in_every_section()
    {
        var c = Valid();
        c["training"]!["learning_rat"] = 0.1;
        Assert.Contains("unknown field 'learning_rat'", ErrorOf(c));
        c = Valid();
        c["model"]!["hidden_sise"] = 3;
        Assert.Contains("unknown field 'hidden_sise'", ErrorOf(c));
        c = Valid();
        c["optimiser"] = new JsonObject();
        Assert.Contains("unknown section 'optimiser'", ErrorOf(c));
    }

    [Fact]
    public void Out_of_range_values_name_the_field_and_the_range()
    {
        var c = Valid();
        c["training"]!["learning_rate"] = 5.0;
        var e = ErrorOf(c);
        Assert.Contains("training.learning_rate", e);
        Assert.Contains("(0, 1]", e);

        c = Valid();
        c["training"]!["seq_len"] = 1000;
        Assert.Contains("training.seq_len: must be in [1, 64]", ErrorOf(c));

        c = Valid();
        c["model"]!["num_key_value_heads"] = 3;
        Assert.Contains("num_key_value_heads: must divide num_attention_heads (4)", ErrorOf(c));

        c = Valid();
        c["training"]!["dtype"] = "float8";
        Assert.Contains("training.dtype: must be one of float32, bfloat16", ErrorOf(c));
    }

    [Fact]
    public void Wrong_types_and_unknown_model_types_are_named()
    {
        var c = Valid();
        c["training"]!["batch_size"] = "sixteen";
        Assert.Contains("'batch_size' has the wrong type", ErrorOf(c));
        c = Valid();
        c["model"]!["model_type"] = "mamba";
        var e = ErrorOf(c);
        Assert.Contains("unsupported model_type 'mamba'", e);
        Assert.Contains("gpt2, llama", e);
    }

    [Fact]
    public void Hugging_Face_configs_load_leniently_and_read_both_rope_layouts()
    {
        var v5 = ModelConfigs.Load(TestModels.FixturePath("hf", "llama", "config.json"));
        Assert.Equal(10000.0, ((TianGong.Models.Llama.LlamaConfig)v5).RotaryTheta);
        var v4 = ModelConfigs.Parse(JsonNode.Parse("""{"model_type":"llama","hidden_size":32,"num_attention_heads":4,"intermediate_size":64,"num_hidden_layers":1,"rope_theta":500000.0,"vocab_size":10,"some_future_field":1}"""), "config.json", strict: false);
        Assert.Equal(500000.0, ((TianGong.Models.Llama.LlamaConfig)v4).RotaryTheta);
        var gpt2 = (ICausalLMConfig)ModelConfigs.Load(TestModels.FixturePath("hf", "gpt2", "config.json"));
        Assert.Equal(64, gpt2.ModelWidth);
    }

    [Fact]
    public void Saved_config_json_reads_back_to_an_equal_record()
    {
        var dir = TestModels.TempDir();
        foreach (ICausalLMConfig config in new ICausalLMConfig[] { TestModels.Gpt2(), TestModels.Llama() })
        {
            var path = Path.Combine(dir, config.ModelType + ".json");
            ModelConfigs.Save(config, path);
            Assert.Equal<object>(config, ModelConfigs.Load(path));
            var json = JsonNode.Parse(File.ReadAllText(path))!;
            Assert.Equal(config.ModelType, json["model_type"]!.GetValue<string>());
            Assert.Equal(config.Architecture, json["architectures"]![0]!.GetValue<string>());
        }
    }
}
