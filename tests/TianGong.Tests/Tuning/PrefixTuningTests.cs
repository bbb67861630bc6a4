using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Models;
using TianGong.Models.Layers;
using TianGong.Training;
using TianGong.Tuning;
using TianGong.Tests.Training;

namespace TianGong.Tests.Tuning;

[Collection(nameof(GlobalRandomState))]
public class PrefixTuningTests
{
    private static float MaxDiff(Tensor a, Tensor b) => (a - b).abs().max().item<float>();

    [Theory]
    [MemberData(nameof(TestModels.DecoderFamilies), MemberType = typeof(TestModels))]
    public void A_model_with_an_empty_prefix_equals_the_base_model(string family)
    {
        using var model = TestModels.Create(family);
        model.eval();
        var (layers, kvHeads, headDim) = PrefixTunedLM.CacheShape(model);
        var tuned = new PrefixTunedLM(model, new PrefixEncoder(0, layers, (int)(kvHeads * headDim), null));
        using var ids = randint(0, 64, [2, 9], dtype: ScalarType.Int64);
        using var _ = no_grad();
        using var expected = model.forward(ids);
        using var actual = tuned.forward(ids);
        Assert.True(actual.eq(expected).all().item<bool>());
    }

    /// <summary>
    /// The reference fills a plain cache of the base model by hand, through the cache's own slot/append/advance calls,
    /// with the keys and values read off the flat prefix as PEFT views it; then the tokens run after it at the next
    /// positions. The prefix-tuned model must give the same logits without a cache, with one, and under padding.
    /// </summary>
    [Theory]
    [MemberData(nameof(TestModels.DecoderFamilies), MemberType = typeof(TestModels))]
    public void The_prefix_keys_and_values_sit_in_the_first_cache_slots_of_every_layer(string family)
    {
        using var model = TestModels.Create(family);
        model.eval();
        manual_seed(7);
        var tuned = new PrefixTuningConfig(3).Create(model);
        var (layers, kvHeads, headDim) = PrefixTunedLM.CacheShape(model);
        using var _ = no_grad();
        using var flat = tuned.Encoder.Prefix();
        Assert.Equal([3L, layers * 2 * kvHeads * headDim], flat.shape);
        using var ids = randint(0, 64, [1, 6], dtype: ScalarType.Int64);

        using var cache = model.CreateCache(1, 3 + 6);
        cache.NextSlots(3, CPU);                                                                  // owned by the cache
        using (var scope = NewDisposeScope())
        {
            var view = flat.view(3, layers, 2, kvHeads, headDim);                                // per token: layer, key/value, head, dim
            for (int l = 0; l < layers; l++)
                cache.Append(l, view.select(1, l).select(1, 0).permute(1, 0, 2).unsqueeze(0), view.select(1, l).select(1, 1).permute(1, 0, 2).unsqueeze(0));
        }
        cache.Advance(3);
        using var reference = model.forward(ids, cache);                                        // (1, 6, V), positions 3..8
        using var plain = model.forward(ids);
        Assert.True(MaxDiff(reference, plain) > 1e-3, "the prefix should change the logits");

        using var actual = tuned.forward(ids);
        Assert.True(MaxDiff(actual, reference) < 1e-5, $"{family}: {MaxDiff(actual, reference)}");

        // Decoding: a cache of the tuned model gets the prefix on its first call and continues after it.
        using var own = tuned.CreateCache(1, 6);
        using var first = tuned.forward(ids.narrow(1, 0, 4), own);
        using var next = tuned.forward(ids.narrow(1, 4, 2), own);
        Assert.True(MaxDiff(cat([first, next], 1), reference) < 1e-5);

        // Left padding (mask and positions as generate() passes them) leaves the real row's logits as they are. Not for the
        // sliding-window families of the tests (windows of 3-4 slots): there the pad slots take room in the window, as in transformers.
        if (family is "mistral" or "qwen2") return;
        using var padded = cat([zeros(1, 2, ScalarType.Int64), ids], 1);
        using var mask = tensor(new long[] { 0, 0, 1, 1, 1, 1, 1, 1 }).unsqueeze(0);
        using var positions = AttentionContext.PositionsFromMask(mask, 8);
        using var masked = tuned.Forward(new DecoderInput { InputIds = padded, AttentionMask = mask, PositionIds = positions }).Logits;
        Assert.True(MaxDiff(masked.narrow(1, 2, 6), reference) < 1e-4, $"{family} padded: {MaxDiff(masked.narrow(1, 2, 6), reference)}");
    }

    [Theory]
    [MemberData(nameof(TestModels.BothFamilies), MemberType = typeof(TestModels))]
    public void Greedy_generation_with_a_prefix_runs_to_the_end_of_the_shortened_context_and_matches_full_recomputation(string family)
    {
        using var model = TestModels.Create(family);
        manual_seed(2);
        var tuned = new PrefixTuningConfig(5).Create(model);
        Assert.Equal(64 - 5, tuned.Config.ContextLength);
        int[] prompt = [4, 9, 1];
        var generated = new TianGong.Inference.TextGenerator(tuned, tokenizer: null)
            .GenerateIds([prompt], new TianGong.Inference.SamplingOptions(MaxNewTokens: 100, Temperature: 0, StopAtEos: false))[0].Generated;
        Assert.Equal(64 - 5 - 3, generated.Length);
        // Each token is the argmax of a cache-free forward over everything before it.
        using var _ = no_grad();
        tuned.eval();
        var all = prompt.Concat(generated).Select(i => (long)i).ToArray();
        using var logits = tuned.forward(tensor(all[..^1]).unsqueeze(0));
        var argmax = logits[0].argmax(1).data<long>().ToArray();
        Assert.Equal(all[prompt.Length..], argmax[(prompt.Length - 1)..]);
    }

    /// <summary>
    /// Gradients reach only the prefix, and they are the true ones: a central difference of the loss along the gradient
    /// matches the autograd directional derivative (this fails if the new tokens' keys and values, written to the cache,
    /// lost their graph).
    /// </summary>
    [Theory]
    [InlineData("llama", false)]
    [InlineData("gpt2", true)]
    public void Only_the_prefix_gets_gradients_and_they_match_finite_differences(string family, bool projection)
    {
        using var model = TestModels.Create(family);
        model.to(ScalarType.Float64);
        model.eval();
        foreach (var p in model.parameters()) p.requires_grad = false;
        manual_seed(3);
        var tuned = new PrefixTuningConfig(2, projection, 8).Create(model);
        using var ids = randint(0, 64, [2, 7], dtype: ScalarType.Int64);
        using var target = randint(0, 64, [2, 7], dtype: ScalarType.Int64);
        Tensor LossTensor() => nn.functional.cross_entropy(tuned.forward(ids).reshape(-1, 64), target.reshape(-1));      // fp64 throughout
        double Loss() => LossTensor().item<double>();

        using (var loss = LossTensor()) loss.backward();
        foreach (var (name, p) in model.named_parameters()) Assert.True(p.grad is null, $"{name} got a gradient");
        var trained = tuned.Encoder.parameters().ToList();
        Assert.All(trained, p => Assert.True(p.grad is not null && p.grad.abs().sum().item<double>() > 0));

        // Directional derivative along the (normalised) gradient, against a central difference.
        using var _ = no_grad();
        double norm = Math.Sqrt(trained.Sum(p => p.grad!.pow(2).sum().item<double>()));
        double analytic = norm;
        const double h = 1e-3;
        foreach (var p in trained) p.add_(p.grad!, alpha: h / norm);
        double up = Loss();
        foreach (var p in trained) p.add_(p.grad!, alpha: -2 * h / norm);
        double down = Loss();
        double numeric = (up - down) / (2 * h);
        Assert.True(Math.Abs(numeric - analytic) < 1e-3 * analytic, $"autograd {analytic}, finite difference {numeric}");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_saved_prefix_loads_back_through_the_adapter_folder_with_identical_logits(bool projection)
    {
        var modelDir = TuningFolders.Model("llama");
        using var loaded = ModelFolder.Load(modelDir);
        var model = loaded.AsCausalLM("test");
        model.eval();
        manual_seed(5);
        var config = new PrefixTuningConfig(4, projection, 12, "base");
        var tuned = config.Create(model);
        var dir = TestModels.TempDir();
        config.Save(tuned, dir);

        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))!;
        Assert.Equal("PREFIX_TUNING", json["peft_type"]!.GetValue<string>());
        Assert.Equal(4, json["num_virtual_tokens"]!.GetValue<int>());
        Assert.Equal(2, json["num_layers"]!.GetValue<int>());
        Assert.Equal(2, json["num_attention_heads"]!.GetValue<int>());      // the key/value heads of the GQA model
        Assert.Equal(16, json["token_dim"]!.GetValue<int>());               // 2 key/value heads × head_dim 8
        Assert.Equal(projection, json["prefix_projection"]!.GetValue<bool>());
        var weights = SafeTensors.Load(Path.Combine(dir, LoraAdapter.WeightsFile));
        Assert.Equal(["prompt_embeddings"], weights.Keys);
        Assert.Equal([4L, 2 * 2 * 16L], weights["prompt_embeddings"].shape);

        using var ids = randint(0, 64, [2, 5], dtype: ScalarType.Int64);
        using var _ = no_grad();
        using var expected = tuned.forward(ids);
        using var again = ModelFolder.Load(modelDir);
        var adapted = AdapterFolder.Apply(again, dir);
        var reloaded = Assert.IsType<PrefixTunedLM>(adapted.Module);
        Assert.False(reloaded.Encoder.Projected);
        reloaded.eval();
        using var actual = reloaded.forward(ids);
        Assert.True(MaxDiff(actual, expected) < 1e-6, $"{MaxDiff(actual, expected)}");
    }

    [Fact]
    public void An_adapter_for_another_base_is_refused_naming_both_shapes()
    {
        var dir = TestModels.TempDir();
        using (var llama = TestModels.Create("llama"))
        {
            var config = new PrefixTuningConfig(2);
            config.Save(config.Create(llama), dir);
        }
        using var gpt2 = TestModels.Create("gpt2");
        var json = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))!;
        var e = Assert.Throws<TianGongException>(() => PrefixTuningConfig.Load(gpt2, dir, json));
        Assert.Contains("token_dim 16", e.Message);
        Assert.Contains("another base model", e.Message);
    }

    [Fact]
    public void Ptuning_v2_trains_only_the_prefix_lowers_the_loss_and_leaves_the_base_bit_identical()
    {
        var modelDir = TuningFolders.Model("llama");
        var outDir = Path.Combine(TestModels.TempDir(), "prefix");
        var result = Finetuning.Run(TuningFolders.Options(modelDir, outDir, FinetuneMethod.PtuningV2, TuningFolders.TextFile(), steps: 10) with
        {
            Training = TuningFolders.Training(10, lr: 3e-2),
            Prefix = new PrefixTuningConfig(4),
        });
        Assert.Equal(4 * 2 * 2 * 16, result.TrainableParameters);
        var records = MetricsLog.Read(result.MetricsPath);
        Assert.True(records[^1].TrainLoss < records[0].TrainLoss, $"loss {records[0].TrainLoss} → {records[^1].TrainLoss}");

        var checkpoint = SafeTensors.Load(Path.Combine(TrainingCheckpoint.List(outDir)[^1].Dir, ModelFolder.WeightsFile));
        foreach (var (key, value) in SafeTensors.Load(Path.Combine(modelDir, ModelFolder.WeightsFile)))
            Assert.True(value.eq(checkpoint["base_model." + key]).all().item<bool>(), $"{key} changed");
        var prefix = SafeTensors.Load(Path.Combine(outDir, LoraAdapter.WeightsFile))["prompt_embeddings"];
        Assert.True(prefix.eq(checkpoint["prompt_encoder.embedding.weight"]).all().item<bool>());
    }
}
