using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Inference;
using TianGong.Models;
using TianGong.Models.T5;

namespace TianGong.Tests.Models;

/// <summary>T5 against the transformers fixture, its config parsing, its decoder cache and encoder-decoder generation.</summary>
public class T5Tests
{
    internal static T5Config Tiny(string feedForwardProj = "relu", bool tied = true) => new(
        VocabSize: 48, DModel: 32, DKv: 8, DFf: 64, NumLayers: 2, NumDecoderLayers: 3, NumHeads: 4,
        RelativeAttentionNumBuckets: 8, RelativeAttentionMaxDistance: 16, DropoutRate: 0,
        FeedForwardProj: feedForwardProj, TieWordEmbeddings: tied, PadTokenId: 0, EosTokenId: 1, DecoderStartTokenId: 0);

    private static T5ForConditionalGeneration Create(T5Config config, long seed = 7)
    {
        manual_seed(seed);
        var model = new T5ForConditionalGeneration(config);
        model.InitializeWeights();
        model.eval();
        return model;
    }

    [Fact]
    public void Logits_and_encoder_output_match_transformers()
    {
        var dir = TestModels.FixturePath("hf", "t5");
        using var loaded = ModelFolder.Load(dir);
        var model = Assert.IsType<T5ForConditionalGeneration>(loaded.Module);
        var expected = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "expected.json")))!;
        using var ids = FromFixture(expected["inputs"]!["input_ids"]!);
        using var mask = FromFixture(expected["inputs"]!["attention_mask"]!);
        using var decoderIds = FromFixture(expected["inputs"]!["decoder_input_ids"]!);
        using var logits = FromFixture(expected["outputs"]!["logits"]!);
        using var encoderHidden = FromFixture(expected["outputs"]!["encoder_last_hidden_state"]!);

        using var _ = no_grad();
        using var ourEncoded = model.Encode(ids, mask);
        using var ourLogits = model.Decode(decoderIds, ourEncoded, mask);
        Assert.Equal(encoderHidden.shape, ourEncoded.shape);
        Assert.Equal(logits.shape, ourLogits.shape);
        double encoderDiff = (ourEncoded - encoderHidden).abs().max().item<float>();
        double logitsDiff = (ourLogits - logits).abs().max().item<float>();
        Assert.True(encoderDiff < 1e-4, $"encoder: max |ours - transformers| = {encoderDiff}");
        Assert.True(logitsDiff < 1e-4, $"logits: max |ours - transformers| = {logitsDiff}");

        using var full = model.forward(ids, mask, decoderIds);
        Assert.True((full - logits).abs().max().item<float>() < 1e-4);
    }

    [Fact]
    public void State_dict_keys_are_exactly_the_checkpoint_keys_with_one_shared_embedding()
    {
        var dir = TestModels.FixturePath("hf", "t5");
        using var file = SafeTensorsFile.Open(Path.Combine(dir, ModelFolder.WeightsFile));
        using var model = new T5ForConditionalGeneration((T5Config)ModelConfigs.Load(Path.Combine(dir, ModelFolder.ConfigFile)));
        var ours = model.state_dict().Keys.Order().ToList();
        Assert.Equal(file.Keys.Order().ToList(), ours);
        Assert.Contains("shared.weight", ours);
        Assert.DoesNotContain(ours, k => k.Contains("embed_tokens") || k.StartsWith("lm_head"));
        Assert.Contains("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", ours);
        Assert.DoesNotContain("encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight", ours);
        Assert.Contains("decoder.block.1.layer.1.EncDecAttention.q.weight", ours);
        Assert.Contains("decoder.block.1.layer.2.DenseReluDense.wi.weight", ours);
    }

    [Fact]
    public void Gated_gelu_config_has_wi_0_and_wi_1_and_untied_config_has_lm_head()
    {
        var config = Tiny("gated-gelu", tied: false);
        Assert.True(config.GatedFeedForward);
        Assert.Equal("gelu_new", config.Activation);
        Assert.False(config.ScalesDecoderOutput);
        using var model = Create(config);
        var sd = model.state_dict();
        Assert.Equal([48L, 32L], sd["lm_head.weight"].shape);
        Assert.Equal([64L, 32L], sd["encoder.block.1.layer.1.DenseReluDense.wi_0.weight"].shape);
        Assert.Equal([64L, 32L], sd["decoder.block.2.layer.2.DenseReluDense.wi_1.weight"].shape);
        Assert.Equal([32L, 64L], sd["decoder.block.2.layer.2.DenseReluDense.wo.weight"].shape);
        Assert.DoesNotContain(sd.Keys, k => k.EndsWith("DenseReluDense.wi.weight"));
        Assert.Equal(3, sd.Keys.Count(k => k.StartsWith("decoder.block.") && k.EndsWith("layer.2.layer_norm.weight")));

        using var _ = no_grad();
        using var logits = model.forward(tensor(new long[] { 5, 6, 7, 1, 9, 10, 1, 0 }, [2, 4]), tensor(new long[] { 0, 3, 4, 0, 8, 2 }, [2, 3]));
        Assert.Equal([2L, 3L, 48L], logits.shape);
        Assert.False(logits.isnan().any().item<bool>());

        using var tiedModel = Create(Tiny("gated-gelu", tied: true));
        Assert.DoesNotContain("lm_head.weight", tiedModel.state_dict().Keys);
    }

    [Fact]
    public void Feed_forward_proj_is_parsed_as_transformers_does()
    {
        Assert.Equal(("relu", false), (Tiny("relu").Activation, Tiny("relu").GatedFeedForward));
        Assert.Equal(("silu", true), (Tiny("gated-silu").Activation, Tiny("gated-silu").GatedFeedForward));
        var bad = Assert.Throws<TianGongException>(() => Tiny("relu-gated").Validate());
        Assert.Contains("feed_forward_proj", bad.Message);
        var unknown = Assert.Throws<TianGongException>(() => Tiny("gated-tanh").Validate());
        Assert.Contains("feed_forward_proj", unknown.Message);

        // A config.json that spells out dense_act_fn / is_gated_act wins over feed_forward_proj, as in HF.
        var node = JsonNode.Parse("""{"model_type":"t5","feed_forward_proj":"relu","dense_act_fn":"gelu_new","is_gated_act":true,"d_model":32,"d_kv":8,"d_ff":64,"num_heads":4}""");
        var parsed = (T5Config)ModelConfigs.Parse(node, "config.json", strict: false);
        Assert.Equal(("gelu_new", true), (parsed.Activation, parsed.GatedFeedForward));
    }

    [Fact]
    public void Relative_position_buckets_follow_T5()
    {
        using var rel = tensor(new long[] { 0, 1, -1, 15, -15, 16, -16, -32, 200, -200 });
        // Bidirectional, 32 buckets: 16 per direction, 8 exact; positive distances use the upper half.
        using var bi = T5Attention.RelativePositionBucket(rel, bidirectional: true, numBuckets: 32, maxDistance: 128);
        Assert.Equal(new long[] { 0, 17, 1, 16 + 9, 9, 16 + 10, 10, 12, 31, 15 }, bi.data<long>().ToArray());
        // Causal, 32 buckets: 16 exact; the future (positive) is bucket 0.
        using var causal = T5Attention.RelativePositionBucket(rel, bidirectional: false, numBuckets: 32, maxDistance: 128);
        Assert.Equal(new long[] { 0, 0, 1, 0, 15, 0, 16, 21, 0, 31 }, causal.data<long>().ToArray());
    }

    [Fact]
    public void Padding_does_not_change_the_unpadded_positions()
    {
        using var model = Create(Tiny());
        using var _ = no_grad();
        using var ids = tensor(new long[] { 5, 6, 7, 8 }, [1, 4]);
        using var padded = tensor(new long[] { 5, 6, 7, 8, 0, 0 }, [1, 6]);
        using var mask = tensor(new long[] { 1, 1, 1, 1, 0, 0 }, [1, 6]);
        using var decoderIds = tensor(new long[] { 0, 9, 10 }, [1, 3]);
        using var plain = model.forward(ids, null, decoderIds);
        using var masked = model.forward(padded, mask, decoderIds);
        Assert.True((plain - masked).abs().max().item<float>() < 1e-5);
        using var unmasked = model.forward(padded, null, decoderIds);
        Assert.True((plain - unmasked).abs().max().item<float>() > 1e-3, "padding without a mask should change the output");
    }

    [Theory]
    [InlineData("relu")]
    [InlineData("gated-gelu")]
    public void Incremental_decoding_equals_full_recomputation(string feedForwardProj)
    {
        using var model = Create(Tiny(feedForwardProj, tied: feedForwardProj == "relu"));
        using var _ = no_grad();
        using var ids = tensor(new long[] { 5, 6, 7, 8, 9, 10, 11, 0 }, [2, 4]);
        using var mask = tensor(new long[] { 1, 1, 1, 1, 1, 1, 1, 0 }, [2, 4]);
        using var decoderIds = tensor(new long[] { 0, 12, 13, 14, 15, 16, 0, 17, 18, 19, 20, 21 }, [2, 6]);
        using var encoded = model.Encode(ids, mask);
        using var full = model.Decode(decoderIds, encoded, mask);                            // (2, 6, V)
        using var cache = model.CreateCache(2, 6);
        // A prefill of two positions, then one position per step, as generation after a forced prefix would do.
        using var first = model.Decode(decoderIds.narrow(1, 0, 2), encoded, mask, cache);
        var steps = new List<Tensor> { first };
        for (int t = 2; t < 6; t++) steps.Add(model.Decode(decoderIds.narrow(1, t, 1), encoded, mask, cache));
        Assert.Equal(6, cache.Length);
        using var incremental = cat(steps, dim: 1);
        double diff = (incremental - full).abs().max().item<float>();
        Assert.True(diff < 1e-5, $"max |incremental - full| = {diff}");
        foreach (var s in steps) s.Dispose();
    }

    [Fact]
    public void Greedy_generation_equals_repeated_full_passes_and_stops_at_eos()
    {
        using var loaded = ModelFolder.Load(TestModels.FixturePath("hf", "t5"));
        var model = (T5ForConditionalGeneration)loaded.Module;
        int[][] sources = [[12, 40, 7, 99, 3], [55, 8]];
        var options = new SamplingOptions(MaxNewTokens: 12, Temperature: 0, RepetitionPenalty: 1.0);
        var results = new Seq2SeqGenerator(model).GenerateIds(sources, options);
        for (int b = 0; b < sources.Length; b++)
        {
            var (expected, finish) = GreedyByFullPasses(model, sources[b], 12);
            Assert.Equal(expected, results[b].Generated);
            Assert.Equal(finish, results[b].FinishReason);
        }
    }

    [Fact]
    public void Generation_stops_at_eos_and_does_not_return_it()
    {
        var options = new SamplingOptions(MaxNewTokens: 6, Temperature: 0, RepetitionPenalty: 1.0);
        int[] source = [5, 6, 7, 8];
        using var model = Create(Tiny() with { EosTokenId = null }); // no eos: six tokens whatever the weights
        var (free, _) = GreedyByFullPasses(model, source, 6);
        Assert.Equal(6, free.Length);
        // The same weights (copied: other tests share torch's global generator), with eos set to the third token greedy decoding produced.
        using var withEos = new T5ForConditionalGeneration(Tiny() with { EosTokenId = free[2] });
        withEos.load_state_dict(model.state_dict());
        withEos.eval();
        var result = new Seq2SeqGenerator(withEos).GenerateIds([source], options)[0];
        Assert.Equal("stop", result.FinishReason);
        Assert.Equal(free.TakeWhile(t => t != free[2]).ToArray(), result.Generated);
    }

    /// <summary>The batch's rows are sampled together (DecodingSequence.StepRows), each with its own seeded generator.</summary>
    [Fact]
    public void Seeded_sampling_in_a_batch_gives_each_source_what_it_gives_alone()
    {
        using var loaded = ModelFolder.Load(TestModels.FixturePath("hf", "t5"));
        var generator = new Seq2SeqGenerator((T5ForConditionalGeneration)loaded.Module);
        int[][] sources = [[12, 40, 7, 99, 3], [55, 8], [9, 9, 31]];
        var options = new SamplingOptions(MaxNewTokens: 10, Temperature: 1.0, TopK: 20, Seed: 3);
        var batched = generator.GenerateIds(sources, options);
        for (int b = 0; b < sources.Length; b++)
        {
            var alone = generator.GenerateIds([sources[b]], options)[0];
            Assert.Equal(alone.Generated, batched[b].Generated);
            Assert.Equal(alone.FinishReason, batched[b].FinishReason);
            Assert.InRange(batched[b].Generated.Length, 1, 10);
        }
    }

    /// <summary>Greedy decoding the slow way: the whole decoder sequence again at every step, no cache.</summary>
    internal static (int[] Ids, string Finish) GreedyByFullPasses(Seq2SeqLM model, int[] source, int maxNew, double repetitionPenalty = 1.0)
    {
        using var _ = no_grad();
        using var ids = tensor(source.Select(i => (long)i).ToArray(), [1, source.Length]);
        var decoded = new List<long> { model.DecoderStartTokenId };
        var output = new List<int>();
        for (int i = 0; i < maxNew; i++)
        {
            using var scope = NewDisposeScope();
            var decoderIds = tensor(decoded.ToArray(), [1, decoded.Count]);
            var logits = model.forward(ids, null, decoderIds).select(1, -1);                // (1, V)
            logits = LogitsProcessing.ApplyRepetitionPenalty(logits, decoderIds, repetitionPenalty);
            int next = (int)logits[0].argmax().item<long>();
            if (next == model.EosTokenId) return (output.ToArray(), "stop");
            output.Add(next);
            decoded.Add(next);
        }
        return (output.ToArray(), "length");
    }

    private static Tensor FromFixture(JsonNode node)
    {
        var shape = node["shape"]!.AsArray().Select(s => s!.GetValue<long>()).ToArray();
        var data = node["data"]!.AsArray();
        return node["dtype"]!.GetValue<string>() == "int64"
            ? tensor(data.Select(d => d!.GetValue<long>()).ToArray(), shape)
            : tensor(data.Select(d => d!.GetValue<float>()).ToArray(), shape);
    }
}
