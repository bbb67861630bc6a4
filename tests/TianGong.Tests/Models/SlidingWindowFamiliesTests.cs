using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Models;
using TianGong.Models.Layers;
using TianGong.Models.Mistral;
using TianGong.Models.Qwen2;

namespace TianGong.Tests.Models;

/// <summary>
/// Mistral and Qwen2 have no transformers fixtures here, so their behaviour is pinned against Llama's (which matches
/// transformers to 1e-4) and against the sliding-window definition: a token sees the window newest positions, itself included.
/// </summary>
public class SlidingWindowFamiliesTests
{
    private static MistralConfig TinyMistral(int? window) => new(
        VocabSize: 64, HiddenSize: 32, IntermediateSize: 64, NumHiddenLayers: 2, NumAttentionHeads: 4, NumKeyValueHeads: 2,
        MaxPositionEmbeddings: 64, RmsNormEps: 1e-5, SlidingWindow: window, BosTokenId: 0, EosTokenId: 0);

    private static Qwen2Config TinyQwen2(bool useSlidingWindow, int window = 4, int maxWindowLayers = 1) => new(
        VocabSize: 64, HiddenSize: 32, IntermediateSize: 64, NumHiddenLayers: 2, NumAttentionHeads: 4, NumKeyValueHeads: 2,
        MaxPositionEmbeddings: 64, RmsNormEps: 1e-5, UseSlidingWindow: useSlidingWindow, SlidingWindow: window,
        MaxWindowLayers: maxWindowLayers, BosTokenId: 0, EosTokenId: 0);

    private static CausalLM Create(ICausalLMConfig config, long seed = 7)
    {
        manual_seed(seed);
        var model = ModelConfigs.CreateCausalLM(config);
        model.InitializeWeights();
        model.eval();
        return model;
    }

    /// <summary>A copy of the llama fixture whose config.json is edited (model_type and extra fields).</summary>
    private static string LlamaFixtureAs(string modelType, Action<JsonObject> edit)
    {
        var dir = TestModels.TempDir();
        var config = (JsonObject)JsonNode.Parse(File.ReadAllText(TestModels.FixturePath("hf", "llama", "config.json")))!;
        config["model_type"] = modelType;
        edit(config);
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        File.Copy(TestModels.FixturePath("hf", "llama", "model.safetensors"), Path.Combine(dir, "model.safetensors"));
        return dir;
    }

    private static Tensor FixtureIds()
    {
        var node = JsonNode.Parse(File.ReadAllText(TestModels.FixturePath("hf", "llama", "expected.json")))!["inputs"]!["input_ids"]!;
        var shape = node["shape"]!.AsArray().Select(s => s!.GetValue<long>()).ToArray();
        return tensor(node["data"]!.AsArray().Select(d => d!.GetValue<long>()).ToArray(), shape); // (2, 12)
    }

    [Fact]
    public void Mistral_with_a_window_covering_the_sequence_gives_llamas_logits()
    {
        using var _ = no_grad();
        using var ids = FixtureIds();
        using var llama = ModelFolder.Load(TestModels.FixturePath("hf", "llama"));
        using var expected = llama.AsCausalLM("test").forward(ids);
        using var mistral = ModelFolder.Load(LlamaFixtureAs("mistral", c => c["sliding_window"] = 12));
        Assert.IsType<MistralForCausalLM>(mistral.Module);
        using var actual = mistral.AsCausalLM("test").forward(ids);
        Assert.Equal(0.0, (actual - expected).abs().max().item<float>(), 6);

        // One position less and the last token loses its first key: the window is really applied.
        using var narrower = ModelFolder.Load(LlamaFixtureAs("mistral", c => c["sliding_window"] = 11));
        using var cut = narrower.AsCausalLM("test").forward(ids);
        Assert.True(allclose(cut[.., ..11], expected[.., ..11], rtol: 0, atol: 1e-6));
        Assert.False(allclose(cut[.., 11], expected[.., 11], rtol: 0, atol: 1e-4));

        // sliding_window: null is full causal attention (Mistral v0.2 on).
        using var full = ModelFolder.Load(LlamaFixtureAs("mistral", c => c["sliding_window"] = null));
        Assert.Null(((MistralConfig)full.Config).SlidingWindow);
        using var fullLogits = full.AsCausalLM("test").forward(ids);
        Assert.Equal(0.0, (fullLogits - expected).abs().max().item<float>(), 6);
    }

    [Fact]
    public void A_token_outside_every_layers_window_does_not_change_later_logits()
    {
        // Two layers with window 4: position p sees tokens p-6..p (each layer reaches 3 positions further back).
        using var model = Create(TinyMistral(window: 4));
        using var _ = no_grad();
        var ids = randint(0, 64, [2, 20], dtype: ScalarType.Int64);
        var changed = ids.clone();
        changed[.., 5] = (changed[.., 5] + 1) % 64;
        var a = model.forward(ids);
        var b = model.forward(changed);
        Assert.True(allclose(a[.., ..5], b[.., ..5], rtol: 0, atol: 0), "positions before the change must not see it");
        for (int p = 5; p <= 11; p++)
            Assert.False(allclose(a[.., p], b[.., p], rtol: 0, atol: 1e-6), $"position {p} is within reach of token 5");
        Assert.True(allclose(a[.., 12..], b[.., 12..], rtol: 0, atol: 1e-6), "positions 12.. are out of reach of token 5");
    }

    [Fact]
    public void Sliding_window_mask_marks_the_window_newest_positions_itself_included()
    {
        // 3 new queries over 6 positions (3 cached): query i sits at position 3 + i.
        using var cache = new KvCache(1, 1, 1, 8, 4, ScalarType.Float32, CPU);
        cache.Advance(3);
        using var context = AttentionContext.Create(1, 3, CPU, attentionMask: null, positionIds: null, cache);
        var mask = context.MaskFor(2)![0, 0];                                                  // (T, S)
        var expected = new bool[,]
        {
            { false, false, true, true, false, false },
            { false, false, false, true, true, false },
            { false, false, false, false, true, true },
        };
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 6; j++)
                Assert.Equal(expected[i, j], mask[i, j].item<bool>());
    }

    public static IEnumerable<object[]> WindowedConfigs() =>
    [
        [TinyMistral(window: 4)],
        [TinyMistral(window: null)],
        [TinyQwen2(useSlidingWindow: true, window: 3, maxWindowLayers: 1)],
    ];

    [Theory]
    [MemberData(nameof(WindowedConfigs))]
    public void Kv_cache_decoding_equals_full_recomputation(ICausalLMConfig config)
    {
        using var model = Create(config);
        using var _ = no_grad();
        var ids = randint(0, 64, [3, 20], dtype: ScalarType.Int64);
        var full = model.forward(ids);
        using var cache = model.CreateCache(3, 32);
        // A prefill of 7, a chunk of 5 (window mask over cached keys), then one token at a time.
        var parts = new List<Tensor> { model.forward(ids[.., ..7], cache), model.forward(ids[.., 7..12], cache) };
        for (int t = 12; t < 20; t++) parts.Add(model.forward(ids[.., t..(t + 1)], cache));
        double maxDiff = (full - cat(parts, dim: 1)).abs().max().item<float>();
        Assert.True(maxDiff < 1e-5, $"max difference {maxDiff}");
    }

    [Fact]
    public void Qwen2_with_zero_qkv_biases_equals_llama_and_with_biases_differs()
    {
        using var _ = no_grad();
        using var ids = FixtureIds();
        using var llama = ModelFolder.Load(TestModels.FixturePath("hf", "llama"));
        using var expected = llama.AsCausalLM("test").forward(ids);

        var config = (Qwen2Config)ModelConfigs.Load(Path.Combine(LlamaFixtureAs("qwen2", _ => { }), "config.json"));
        using var qwen = new Qwen2ForCausalLM(config);
        var state = qwen.state_dict();
        Assert.Contains("model.layers.1.self_attn.q_proj.bias", state.Keys);
        Assert.Contains("model.layers.1.self_attn.k_proj.bias", state.Keys);
        Assert.Contains("model.layers.1.self_attn.v_proj.bias", state.Keys);
        Assert.DoesNotContain("model.layers.1.self_attn.o_proj.bias", state.Keys);
        Assert.DoesNotContain(state.Keys, k => k.Contains("mlp") && k.EndsWith(".bias"));
        var llamaState = llama.Module.state_dict();
        Assert.Equal(llamaState.Keys.Order(), state.Keys.Where(k => !k.EndsWith(".bias")).Order());
        foreach (var (key, target) in state)
            if (key.EndsWith(".bias")) target.zero_();
            else target.copy_(llamaState[key]);
        qwen.eval();
        using var same = qwen.forward(ids);
        Assert.Equal(0.0, (same - expected).abs().max().item<float>(), 6);

        state["model.layers.0.self_attn.k_proj.bias"].normal_(0, 0.5);
        using var biased = qwen.forward(ids);
        Assert.True((biased - expected).abs().max().item<float>() > 1e-3, "a k_proj bias must change the logits");
    }

    [Fact]
    public void Qwen2_slides_only_when_use_sliding_window_and_only_from_max_window_layers_on()
    {
        var off = TinyQwen2(useSlidingWindow: false, window: 4, maxWindowLayers: 0);
        Assert.Null(off.WindowOfLayer(0));
        Assert.Null(off.WindowOfLayer(1));
        var on = TinyQwen2(useSlidingWindow: true, window: 4, maxWindowLayers: 1);
        Assert.Null(on.WindowOfLayer(0));
        Assert.Equal(4, on.WindowOfLayer(1));
        var typed = on with { LayerTypes = ["sliding_attention", "full_attention"] };
        Assert.Equal(4, typed.WindowOfLayer(0));
        Assert.Null(typed.WindowOfLayer(1));

        // With sliding off, a change 10 positions back still reaches the last token; with layer 1 sliding
        // (window 4) and layer 0 full, it reaches it only through layer 0, so logits differ between the two settings.
        using var _ = no_grad();
        using var full = Create(off);
        using var windowed = ModelConfigs.CreateCausalLM(on); // the same weights: copied, since the global RNG is shared with parallel tests
        windowed.load_state_dict(full.state_dict());
        windowed.eval();
        var ids = randint(0, 64, [1, 16], dtype: ScalarType.Int64);
        var diff = (full.forward(ids)[.., ..4] - windowed.forward(ids)[.., ..4]).abs().max().item<float>();
        Assert.True(diff < 1e-5, $"within the window both agree (up to the masked kernel's rounding), max difference {diff}");
        Assert.False(allclose(full.forward(ids)[.., 15], windowed.forward(ids)[.., 15], rtol: 0, atol: 1e-5));
    }

    [Fact]
    public void Configs_read_v4_and_v5_rope_layouts_and_reject_unsupported_model_types()
    {
        var v4 = (MistralConfig)ModelConfigs.Parse(JsonNode.Parse("""
            {"model_type": "mistral", "rope_theta": 1000000.0, "sliding_window": null,
             "rope_scaling": {"type": "linear", "factor": 2.0}}
            """), "config.json", strict: false);
        Assert.Equal(1e6, v4.Rope.RopeTheta);
        Assert.Equal("linear", v4.Rope.Kind);
        Assert.Equal(2.0, v4.Rope.Factor);
        Assert.Equal(4096, ((MistralConfig)ModelConfigs.Parse(JsonNode.Parse("""{"model_type": "mistral"}"""), "c", false)).SlidingWindow);

        var v5 = (Qwen2Config)ModelConfigs.Parse(JsonNode.Parse("""
            {"model_type": "qwen2", "use_sliding_window": false, "sliding_window": 131072, "max_window_layers": 70,
             "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}
            """), "config.json", strict: false);
        Assert.Equal(1e6, v5.Rope.RopeTheta);
        Assert.Equal("yarn", v5.Rope.Kind);
        Assert.Equal(32768, v5.Rope.OriginalMaxPositionEmbeddings);

        var e = Assert.Throws<TianGongException>(() => ModelConfigs.Parse(JsonNode.Parse("""{"model_type": "falcon"}"""), "config.json", false));
        Assert.Contains("'falcon'", e.Message);
        foreach (var supported in new[] { "gpt2", "llama", "mistral", "qwen2", "bert", "t5" })
            Assert.Contains(supported, e.Message);
    }
}
