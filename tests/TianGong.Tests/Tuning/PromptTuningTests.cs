using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Models;
using TianGong.Training;
using TianGong.Tuning;
using TianGong.Tests.Training;

namespace TianGong.Tests.Tuning;

[Collection(nameof(GlobalRandomState))]
public class PromptTuningTests
{
    [Theory]
    [MemberData(nameof(TestModels.BothFamilies), MemberType = typeof(TestModels))]
    public void A_prompt_tuned_model_with_an_empty_prompt_equals_the_base_model(string family)
    {
        using var model = TestModels.Create(family);
        model.eval();
        using var ids = randint(0, 64, [2, 9], dtype: ScalarType.Int64);
        using var _ = no_grad();
        using var expected = model.forward(ids);
        using var empty = zeros(0, model.Config.ModelWidth);
        var tuned = new PromptTunedLM(model, empty);
        using var actual = tuned.forward(ids);
        Assert.True(actual.eq(expected).all().item<bool>());
    }

    [Theory]
    [MemberData(nameof(TestModels.BothFamilies), MemberType = typeof(TestModels))]
    public void The_soft_prompt_is_seen_as_embeddings_in_front_and_decoding_with_the_cache_agrees(string family)
    {
        using var model = TestModels.Create(family);
        model.eval();
        using var prompt = randn(3, model.Config.ModelWidth) * 0.02;
        var tuned = new PromptTunedLM(model, prompt);
        using var ids = randint(0, 64, [1, 6], dtype: ScalarType.Int64);
        using var _ = no_grad();
        using var full = tuned.forward(ids);                                                     // (1, 6, V)
        using var embeds = cat([prompt.unsqueeze(0), model.EmbedTokens(ids)], 1);
        using var reference = model.Forward(new DecoderInput { InputsEmbeds = embeds }).Logits.narrow(1, 3, 6);
        Assert.True((full - reference).abs().max().item<float>() < 1e-5);

        using var cache = tuned.CreateCache(1, 10);
        using var first = tuned.forward(ids.narrow(1, 0, 5), cache);
        using var next = tuned.forward(ids.narrow(1, 5, 1), cache);
        Assert.True((next[0, 0] - full[0, 5]).abs().max().item<float>() < 1e-4);
        Assert.True((first - full.narrow(1, 0, 5)).abs().max().item<float>() < 1e-5);
    }

    [Fact]
    public void Prompt_tuning_trains_only_the_soft_prompt_and_saves_peft_prompt_tuning_layout()
    {
        var modelDir = TuningFolders.Model();
        var outDir = Path.Combine(TestModels.TempDir(), "prompt");
        var result = Finetuning.Run(TuningFolders.Options(modelDir, outDir, FinetuneMethod.Prompt, TuningFolders.TextFile(), steps: 8) with
        {
            Training = TuningFolders.Training(8, lr: 0.1),
        });
        Assert.Equal(4 * 32, result.TrainableParameters);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "adapter_config.json")))!;
        Assert.Equal("PROMPT_TUNING", json["peft_type"]!.GetValue<string>());
        Assert.Equal(4, json["num_virtual_tokens"]!.GetValue<int>());
        Assert.Equal(32, json["token_dim"]!.GetValue<int>());
        Assert.Equal("TEXT", json["prompt_tuning_init"]!.GetValue<string>());
        var weights = SafeTensors.Load(Path.Combine(outDir, LoraAdapter.WeightsFile));
        Assert.Equal(["prompt_embeddings"], weights.Keys);
        Assert.Equal([4L, 32L], weights["prompt_embeddings"].shape);

        var checkpoint = SafeTensors.Load(Path.Combine(TrainingCheckpoint.List(outDir)[^1].Dir, ModelFolder.WeightsFile));
        foreach (var (key, value) in SafeTensors.Load(Path.Combine(modelDir, ModelFolder.WeightsFile)))
            Assert.True(value.eq(checkpoint["base_model." + key]).all().item<bool>(), $"{key} changed");

        using var loaded = ModelFolder.Load(modelDir);
        var adapted = AdapterFolder.Apply(loaded, outDir);
        var tuned = Assert.IsType<PromptTunedLM>(adapted.Module);
        Assert.True(tuned.Prompt.eq(weights["prompt_embeddings"]).all().item<bool>());
    }
}
