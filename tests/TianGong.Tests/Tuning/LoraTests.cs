using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Models;
using TianGong.Models.Layers;
using TianGong.Tests.Models;
using TianGong.Tuning;
using TianGong.Tests.Training;

namespace TianGong.Tests.Tuning;

[Collection(nameof(GlobalRandomState))]
public class LoraTests
{
    private static readonly string PeftAdapter = TestModels.FixturePath("peft", "llama");
    private static readonly string LlamaFolder = TestModels.FixturePath("hf", "llama");

    [Fact]
    public void An_adapter_written_by_peft_gives_peft_logits_and_merges_to_peft_merged_logits()
    {
        var expected = JsonNode.Parse(File.ReadAllText(Path.Combine(PeftAdapter, "expected.json")))!;
        using var loaded = ModelFolder.Load(LlamaFolder);
        var model = loaded.AsCausalLM("test");
        using var ids = BertTests.FromFixture(expected["inputs"]!["input_ids"]!);
        using var _ = no_grad();
        AssertClose(expected["outputs"]!["base_logits"]!, model.forward(ids), "base");

        var config = LoraAdapter.Load(model, PeftAdapter);
        Assert.Equal(4, config.R);
        Assert.Equal(4, LoraAdapter.Layers(model).Count);                                         // q_proj, v_proj × 2 layers
        AssertClose(expected["outputs"]!["logits"]!, model.forward(ids), "base + adapter");

        LoraAdapter.Merge(model);
        Assert.Empty(LoraAdapter.Layers(model));
        Assert.DoesNotContain(model.state_dict().Keys, k => k.Contains("lora"));
        AssertClose(expected["outputs"]!["merged_logits"]!, model.forward(ids), "merged");
    }

    [Theory]
    [InlineData("gpt2", "c_attn,c_fc", true)]
    [InlineData("llama", "all-linear", false)]
    [InlineData("mistral", "model.layers.1.*_proj", false)]
    public void Our_adapter_round_trips_in_peft_layout_and_merged_equals_base_plus_adapter(string family, string targets, bool fanInFanOut)
    {
        using var model = TestModels.Create(family);
        model.eval();
        var config = new LoraConfig(R: 2, LoraAlpha: 4, LayerSelector.Parse(targets), BaseModelNameOrPath: "tiny");
        var replaced = LoraAdapter.Inject(model, config);
        RandomizeB(model);
        using var ids = randint(0, 64, [2, 10], dtype: ScalarType.Int64);
        using var _ = no_grad();
        using var adapted = model.forward(ids);

        var dir = TestModels.TempDir();
        LoraAdapter.Save(model, config, dir);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))!;
        Assert.Equal("LORA", json["peft_type"]!.GetValue<string>());
        Assert.Equal(fanInFanOut, json["fan_in_fan_out"]!.GetValue<bool>());
        Assert.Equal(2, json["r"]!.GetValue<int>());
        var keys = SafeTensors.Load(Path.Combine(dir, LoraAdapter.WeightsFile)).Keys.Order(StringComparer.Ordinal).ToList();
        Assert.Equal(replaced.SelectMany(n => new[] { $"base_model.model.{n}.lora_A.weight", $"base_model.model.{n}.lora_B.weight" }).Order(StringComparer.Ordinal), keys);

        using var fresh = TestModels.Create(family);
        fresh.eval();
        var reread = LoraAdapter.Load(fresh, dir);
        Assert.Equal(replaced, LoraAdapter.Layers(fresh).Select(l => l.Name));
        Assert.True(fresh.forward(ids).eq(adapted).all().item<bool>(), "reloaded adapter must give the same logits");

        LoraAdapter.Merge(fresh);
        double diff = (fresh.forward(ids) - adapted).abs().max().item<float>();
        Assert.True(diff < 1e-5, $"merged differs from base + adapter by {diff}");
        Assert.Equal(TestModels.Create(family).state_dict().Keys, fresh.state_dict().Keys);
    }

    [Fact]
    public void Training_touches_only_the_adapter_and_leaves_base_weights_bit_identical()
    {
        using var model = TestModels.Create("llama");
        var baseWeights = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        LoraAdapter.Inject(model, new LoraConfig(4, 8, LayerSelector.Parse("q_proj,v_proj")));
        foreach (var (name, p) in model.named_parameters()) p.requires_grad = name.Contains(".lora_");
        var trainable = model.parameters().Where(p => p.requires_grad).ToList();
        Assert.Equal(8, trainable.Count);
        using var optimizer = optim.AdamW(trainable, lr: 1e-2);
        var batch = randint(0, 64, [4, 17], dtype: ScalarType.Int64);
        double first = 0, last = 0;
        for (int step = 0; step < 30; step++)
        {
            using var scope = NewDisposeScope();
            var loss = nn.functional.cross_entropy(model.forward(batch[.., ..16]).reshape(-1, 64), batch[.., 1..].reshape(-1));
            optimizer.zero_grad();
            loss.backward();
            optimizer.step();
            if (step == 0) first = loss.item<float>();
            last = loss.item<float>();
        }
        Assert.True(last < first - 0.1, $"loss {first} → {last}");
        foreach (var (key, value) in baseWeights)
            Assert.True(model.state_dict()[key].eq(value).all().item<bool>(), $"{key} changed");
    }

    [Fact]
    public void An_adapter_for_another_base_names_the_tensor_and_both_shapes()
    {
        using var model = TestModels.Create("llama");                                        // hidden 32; the PEFT fixture's base differs
        var e = Assert.Throws<TianGongException>(() => LoraAdapter.Load(model, PeftAdapter));
        Assert.Contains("made for another base model", e.Message);
        Assert.Contains("q_proj.lora_A.weight", e.Message);
    }

    private static void RandomizeB(nn.Module model)
    {
        using var _ = no_grad();
        foreach (var (_, layer) in LoraAdapter.Layers(model)) layer.B.normal_(0, 0.5);
    }

    private static void AssertClose(JsonNode expected, Tensor actual, string what)
    {
        using var want = BertTests.FromFixture(expected);
        Assert.Equal(want.shape, actual.shape);
        double diff = (actual - want).abs().max().item<float>();
        Assert.True(diff < 1e-4, $"{what}: max |ours - PEFT| = {diff}");
    }
}
