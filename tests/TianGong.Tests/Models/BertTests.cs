using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Models;
using TianGong.Models.Bert;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Tests.Models;

/// <summary>BERT against the transformers 5.3 fixture (BertModel, token types switching mid-sequence), plus padding and heads.</summary>
public class BertTests
{
    private static readonly string Fixture = TestModels.FixturePath("hf", "bert");

    [Fact]
    public void Hidden_states_and_pooler_output_match_transformers()
    {
        using var loaded = ModelFolder.Load(Fixture);
        Assert.IsType<BertModel>(loaded.Module);
        var expected = Expected();
        using var _ = no_grad();
        using var ids = FromFixture(expected["inputs"]!["input_ids"]!);
        using var mask = FromFixture(expected["inputs"]!["attention_mask"]!);
        using var types = FromFixture(expected["inputs"]!["token_type_ids"]!);
        using var output = loaded.AsEncoder("test").Encode(ids, mask, types);
        AssertClose(FromFixture(expected["outputs"]!["last_hidden_state"]!), output.LastHiddenState, "last_hidden_state");
        AssertClose(FromFixture(expected["outputs"]!["pooler_output"]!), output.PoolerOutput!, "pooler_output");
    }

    [Fact]
    public void Token_types_change_the_output()
    {
        // Guards the parity test: if token_type_ids were ignored, the fixture would have to fail, not pass by luck.
        using var loaded = ModelFolder.Load(Fixture);
        var expected = Expected();
        using var _ = no_grad();
        using var ids = FromFixture(expected["inputs"]!["input_ids"]!);
        using var output = loaded.AsEncoder("test").Encode(ids);
        using var want = FromFixture(expected["outputs"]!["last_hidden_state"]!);
        Assert.True((output.LastHiddenState - want).abs().max().item<float>() > 1e-2);
    }

    [Fact]
    public void A_masked_token_changes_no_other_position()
    {
        using var loaded = ModelFolder.Load(Fixture);
        var encoder = loaded.AsEncoder("test");
        var expected = Expected();
        using var _ = no_grad();
        using var ids = FromFixture(expected["inputs"]!["input_ids"]!);
        using var types = FromFixture(expected["inputs"]!["token_type_ids"]!);
        using var mask = ones_like(ids);
        mask[1, 9..] = tensor(0L);                                    // last 3 tokens of row 1 are padding
        using var changed = ids.clone();
        changed[1, 9..] = tensor(new long[] { 7, 8, 9 });

        using var full = encoder.Encode(ids, null, types);
        using var a = encoder.Encode(ids, mask, types);
        using var b = encoder.Encode(changed, mask, types);
        // Unmasked positions ignore what the padding holds ...
        double padEffect = (a.LastHiddenState[1, ..9] - b.LastHiddenState[1, ..9]).abs().max().item<float>();
        Assert.True(padEffect < 1e-6, $"padding changed real positions by {padEffect}");
        Assert.True((a.PoolerOutput! - b.PoolerOutput!).abs().max().item<float>() < 1e-6);
        // ... row 0 is untouched ...
        Assert.True((a.LastHiddenState[0] - full.LastHiddenState[0]).abs().max().item<float>() < 1e-6);
        // ... and the mask really hid something: without it, row 1 differs.
        Assert.True((a.LastHiddenState[1, ..9] - full.LastHiddenState[1, ..9]).abs().max().item<float>() > 1e-3);
        // The masked positions themselves still see their own (changed) ids.
        Assert.True((a.LastHiddenState[1, 9..] - b.LastHiddenState[1, 9..]).abs().max().item<float>() > 1e-3);
    }

    [Fact]
    public void Mean_pooling_weights_by_the_attention_mask_and_batches_match_single_sequences()
    {
        using var loaded = ModelFolder.Load(Fixture);
        var encoder = loaded.AsEncoder("test");
        int[] first = [328, 384, 353, 219, 207], second = [86, 86, 133];
        var batch = SentenceEmbedding.Embed(encoder, [first, second], Pooling.Mean);
        var alone = SentenceEmbedding.Embed(encoder, [second], Pooling.Mean);
        Assert.Equal(64, batch[1].Length);
        for (int i = 0; i < 64; i++) Assert.Equal(alone[0][i], batch[1][i], 1e-5);

        using var _ = no_grad();
        using var output = encoder.Encode(tensor(second.Select(i => (long)i).ToArray(), [1, 3]));
        using var manualMean = output.LastHiddenState[0].mean([0]);
        for (int i = 0; i < 64; i++) Assert.Equal(manualMean[i].item<float>(), batch[1][i], 1e-5);
        var cls = SentenceEmbedding.Embed(encoder, [second], Pooling.Cls);
        Assert.Equal(output.LastHiddenState[0, 0, 5].item<float>(), cls[0][5], 1e-5);
        Assert.NotEqual(cls[0][5], batch[1][5]);
    }

    [Fact]
    public void Architectures_picks_the_masked_LM_head_with_Hugging_Face_keys()
    {
        var config = MaskedLMConfig();
        Assert.IsType<BertForMaskedLM>(ModelConfigs.CreateModel(config));
        Assert.IsType<BertModel>(ModelConfigs.CreateModel(config with { Architecture = BertConfig.BaseModel }));
        using var model = new BertForMaskedLM(config);
        var keys = model.state_dict().Keys.ToHashSet();
        Assert.Contains("bert.embeddings.word_embeddings.weight", keys);
        Assert.Contains("bert.encoder.layer.1.attention.self.query.weight", keys);
        Assert.Contains("cls.predictions.transform.dense.weight", keys);
        Assert.Contains("cls.predictions.transform.LayerNorm.bias", keys);
        Assert.Contains("cls.predictions.bias", keys);
        Assert.DoesNotContain("cls.predictions.decoder.weight", keys);       // tied to the word embedding
        Assert.DoesNotContain(keys, k => k.Contains("pooler"));
        using var untied = new BertForMaskedLM(config with { TieWordEmbeddings = false });
        Assert.Contains("cls.predictions.decoder.weight", untied.state_dict().Keys);
    }

    [Fact]
    public void Masked_LM_logits_are_the_transformed_hidden_states_times_the_word_embedding()
    {
        var dir = TestModels.TempDir();
        var expected = Expected();
        manual_seed(5);
        using (var source = new BertForMaskedLM(MaskedLMConfig()))
        using (var fixture = ModelFolder.Load(Fixture))
        {
            using (no_grad())
            {
                var target = source.state_dict();
                foreach (var (key, value) in fixture.Module.state_dict())
                    if (!key.StartsWith("pooler.")) target["bert." + key].copy_(value);
                foreach (var (key, value) in target)
                    if (key.StartsWith("cls.")) value.normal_(0, 0.2);
            }
            ModelFolder.Save(dir, source, MaskedLMConfig(), tokenizer: null);
        }
        var saved = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!;
        Assert.Equal("BertForMaskedLM", saved["architectures"]![0]!.GetValue<string>());

        using var loaded = ModelFolder.Load(dir);
        var mlm = Assert.IsType<BertForMaskedLM>(loaded.Module);
        using var _ = no_grad();
        using var ids = FromFixture(expected["inputs"]!["input_ids"]!);
        using var types = FromFixture(expected["inputs"]!["token_type_ids"]!);
        using var logits = mlm.forward(ids, null, types);
        Assert.Equal(new long[] { 2, 12, 512 }, logits.shape);

        // The head computed by hand from transformers' hidden states: gelu(dense) → LayerNorm → · Eᵀ + bias.
        var w = loaded.Module.state_dict();
        using var hidden = FromFixture(expected["outputs"]!["last_hidden_state"]!);
        var h = F.gelu(F.linear(hidden, w["cls.predictions.transform.dense.weight"], w["cls.predictions.transform.dense.bias"]));
        h = F.layer_norm(h, [64], w["cls.predictions.transform.LayerNorm.weight"], w["cls.predictions.transform.LayerNorm.bias"], 1e-12);
        using var want = F.linear(h, w["bert.embeddings.word_embeddings.weight"], w["cls.predictions.bias"]);
        AssertClose(want, logits, "logits");
    }

    [Fact]
    public void Config_reads_the_fixture_and_rejects_what_it_does_not_model()
    {
        var config = Assert.IsType<BertConfig>(ModelConfigs.Load(Path.Combine(Fixture, "config.json")));
        Assert.Equal(BertConfig.BaseModel, config.Architecture);
        Assert.Equal((64, 2, 4, 128, 1e-12), (config.HiddenSize, config.NumHiddenLayers, config.NumAttentionHeads, config.IntermediateSize, config.LayerNormEps));

        var e = Assert.Throws<TianGongException>(() => ModelConfigs.Parse(Json("""{"model_type":"bert","position_embedding_type":"relative_key"}"""), "config.json", strict: false));
        Assert.Contains("config.json: position_embedding_type: only 'absolute'", e.Message);
        e = Assert.Throws<TianGongException>(() => ModelConfigs.Parse(Json("""{"model_type":"bert","architectures":["BertForSequenceClassification"]}"""), "config.json", strict: false));
        Assert.Contains("architectures", e.Message);
        Assert.Contains("BertForSequenceClassification", e.Message);
        e = Assert.Throws<TianGongException>(() => ModelConfigs.Parse(Json("""{"model_type":"bert","hidden_act":"swish"}"""), "config.json", strict: false));
        Assert.Contains("hidden_act", e.Message);
        // No architectures at all: the bare encoder, as AutoModel gives.
        Assert.Equal(BertConfig.BaseModel, ModelConfigs.Parse(Json("""{"model_type":"bert","architectures":null}"""), "x", strict: false).Architecture);

        var path = Path.Combine(TestModels.TempDir(), "config.json");
        ModelConfigs.Save(MaskedLMConfig(), path);
        Assert.Equal<object>(MaskedLMConfig(), ModelConfigs.Load(path));
    }

    [Fact]
    public void Decoder_folders_are_not_encoders_and_bert_is_not_a_causal_LM()
    {
        using var gpt2 = ModelFolder.Load(TestModels.FixturePath("hf", "gpt2"));
        var e = Assert.Throws<TianGongException>(() => gpt2.AsEncoder("embed"));
        Assert.Contains("model_type 'gpt2'", e.Message);
        Assert.Contains("needs an encoder", e.Message);
        using var bert = ModelFolder.Load(Fixture);
        Assert.Contains("model_type 'bert'", Assert.Throws<TianGongException>(() => bert.AsCausalLM("score")).Message);
    }

    private static BertConfig MaskedLMConfig() => new(
        VocabSize: 512, HiddenSize: 64, NumHiddenLayers: 2, NumAttentionHeads: 4, IntermediateSize: 128,
        MaxPositionEmbeddings: 64, Architecture: BertConfig.MaskedLM);

    private static JsonNode Json(string text) => JsonNode.Parse(text)!;

    private static JsonNode Expected() => JsonNode.Parse(File.ReadAllText(Path.Combine(Fixture, "expected.json")))!;

    private static void AssertClose(Tensor expected, Tensor actual, string what)
    {
        Assert.Equal(expected.shape, actual.shape);
        double maxDiff = (actual - expected).abs().max().item<float>();
        Assert.True(maxDiff < 1e-4, $"{what}: max |ours - transformers| = {maxDiff}");
    }

    internal static Tensor FromFixture(JsonNode node)
    {
        var shape = node["shape"]!.AsArray().Select(s => s!.GetValue<long>()).ToArray();
        var data = node["data"]!.AsArray();
        return node["dtype"]!.GetValue<string>() == "int64"
            ? tensor(data.Select(d => d!.GetValue<long>()).ToArray(), shape)
            : tensor(data.Select(d => d!.GetValue<float>()).ToArray(), shape);
    }
}
