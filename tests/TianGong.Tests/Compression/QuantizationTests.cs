using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Compression.Quantization;
using TianGong.Models;
using TianGong.Models.Layers;
using TianGong.Tests.Cli;
using TianGong.Tests.Models;

namespace TianGong.Tests.Compression;

public class QuantizationTests
{
    [Theory]
    [InlineData(4)]
    [InlineData(8)]
    public void Packing_round_trips_bit_exactly_including_zero_points_of_zero(int bits)
    {
        var random = new Random(7);
        int maxq = (1 << bits) - 1;
        const int inF = 64, outF = 48, groups = 3;
        var q = Enumerable.Range(0, inF * outF).Select(_ => random.Next(maxq + 1)).ToArray();
        var zeros = Enumerable.Range(0, groups * outF).Select(i => i % 5 == 0 ? 0 : i % 7 == 0 ? maxq : random.Next(maxq + 1)).ToArray();
        Assert.Equal(q, GptqPacking.UnpackWeight(GptqPacking.PackWeight(q, inF, outF, bits), inF, outF, bits));
        Assert.Equal(zeros, GptqPacking.UnpackZeros(GptqPacking.PackZeros(zeros, groups, outF, bits), groups, outF, bits));
    }

    [Fact]
    public void Packing_follows_the_gptq_v1_layout()
    {
        // Eight consecutive inputs of one output share an int32, the first in the lowest bits.
        var q = new[] { 1, 2, 3, 4, 5, 6, 7, 8 }; // (in 8, out 1)
        Assert.Equal(unchecked((int)0x87654321), GptqPacking.PackWeight(q, 8, 1, 4).Single());
        // Zero points are stored minus one: symmetric int4 (8) as 7, int8 (128) as 127; a zero of 0 as all ones.
        Assert.Equal(0x77777777, GptqPacking.PackZeros(Enumerable.Repeat(8, 8).ToArray(), 1, 8, 4).Single());
        Assert.Equal(0x7F7F7F7F, GptqPacking.PackZeros(Enumerable.Repeat(128, 4).ToArray(), 1, 4, 8).Single());
        Assert.Equal(unchecked((int)0x7F7F7FFF), GptqPacking.PackZeros([0, 128, 128, 128], 1, 4, 8).Single());
        Assert.Equal([0, 0, 1, 1, 2], GptqPacking.GroupIndex(5, 2));
    }

    [Theory]
    [InlineData(8, -1, true)]
    [InlineData(4, 32, true)]
    [InlineData(4, 32, false)]
    [InlineData(4, 64, false)]
    public void Rtn_error_is_at_most_one_step_and_a_quarter_step_on_average_and_the_layer_computes_the_dequantized_weight(int bits, int groupSize, bool sym)
    {
        manual_seed(3);
        using var linear = nn.Linear(128, 64, hasBias: true);
        var parts = LinearLayers.Describe(linear)!;
        var config = new GptqConfig(bits, groupSize, sym);
        var w = parts.Weight.detach().contiguous().data<float>().ToArray();
        var quantized = QuantizedWeight.Rtn(w, 128, 64, config);
        var back = quantized.Dequantize();
        // Rounding errs by up to half a step; only the range's ends, clipped to the grid (GPTQ's symmetric grid is
        // [-2^(b-1), 2^(b-1) - 1] steps; an asymmetric zero point is itself rounded), may err by up to one.
        double relative = 0;
        for (int o = 0; o < 64; o++)
            for (int i = 0; i < 128; i++)
            {
                float step = (float)quantized.Scales[i / quantized.GroupSize * 64 + o];
                float error = Math.Abs(back[o * 128 + i] - w[o * 128 + i]);
                Assert.True(error <= step * 1.01f, $"w[{o},{i}]: error {error}, step {step}");
                relative += error / step;
            }
        double mean = relative / (64 * 128);
        Assert.True(mean is > 0.2 and < 0.3, $"mean error {mean} steps (uniform rounding gives 1/4)");
        using var layer = QuantizedLinear.FromWeight(parts, quantized);
        using var expectedW = tensor(back).view(64, 128);
        using var x = randn(5, 3, 128);
        using var _ = no_grad();
        using var want = nn.functional.linear(x, expectedW, parts.Bias);
        Assert.True(torch.allclose(layer.forward(x), want, rtol: 1e-5, atol: 1e-5));
    }

    [Theory]
    [InlineData(8, -1, true)]
    [InlineData(8, 32, false)]
    [InlineData(4, 32, true)]
    [InlineData(4, 128, false)]
    public void The_cpu_kernel_matches_the_dequantized_matmul_for_a_few_rows(int bits, int groupSize, bool sym)
    {
        if (!System.Runtime.Intrinsics.X86.Avx512BW.IsSupported) return; // the kernel is not used here: nothing to compare
        manual_seed(5);
        using var linear = nn.Linear(256, 104, hasBias: true); // three 32-output tiles and one of 8
        using var layer = QuantizedLinear.Rtn(LinearLayers.Describe(linear)!, new GptqConfig(bits, groupSize, sym));
        using var _ = no_grad();
        foreach (var rows in new[] { 1, 3, 8 })
        {
            using var x = randn(rows, 1, 256);
            using var want = x.matmul(layer.DequantizedWeight(ScalarType.Float32)) + layer.Buffers.Bias!;
            using var got = layer.forward(x);
            Assert.Equal(want.shape, got.shape);
            // int16 activations (±8191 per row) against fp32 ones: about 1e-4 of the row's size.
            double diff = (got - want).abs().max().item<float>(), size = want.abs().max().item<float>();
            Assert.True(diff < 2e-3 * size, $"rows {rows}: max |kernel - dequantized matmul| = {diff} (outputs up to {size})");
        }
    }

    [Theory]
    [InlineData("llama")]
    [InlineData("gpt2")]
    public void Int8_logits_stay_within_2_percent_of_the_logit_range_and_int4_perplexity_within_5_percent(string family)
    {
        var dir = TestModels.FixturePath("hf", family);
        var expected = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "expected.json")))!;
        using var ids = BertTests.FromFixture(expected["inputs"]!["input_ids"]!);
        using var _ = no_grad();
        using var fp32 = ModelFolder.Load(dir);
        using var reference = fp32.AsCausalLM("test").forward(ids);
        double range = (reference.max() - reference.min()).item<float>();

        using var int8 = ModelFolder.Load(dir);
        QuantizedModel.QuantizeRtn(int8.Module, new GptqConfig(8, -1, Sym: true));
        double diff8 = (int8.AsCausalLM("test").forward(ids) - reference).abs().max().item<float>();
        Assert.True(diff8 < 0.02 * range, $"int8: max |logits - fp32| = {diff8}, logit range {range}");

        using var int4 = ModelFolder.Load(dir);
        QuantizedModel.QuantizeRtn(int4.Module, new GptqConfig(4, 32, Sym: false));
        double ppl32 = Perplexity(reference, ids), ppl4 = Perplexity(int4.AsCausalLM("test").forward(ids), ids);
        Assert.True(Math.Abs(ppl4 / ppl32 - 1) < 0.05, $"int4 g32 perplexity {ppl4} vs fp32 {ppl32}");
        Assert.True(diff8 > 0, "quantization changed nothing: the layers were not replaced");
    }

    internal static double Perplexity(Tensor logits, Tensor ids)
    {
        using var scope = NewDisposeScope();
        var v = logits.shape[^1];
        var loss = nn.functional.cross_entropy(logits[.., ..^1].reshape(-1, v), ids[.., 1..].reshape(-1));
        return Math.Exp(loss.item<float>());
    }

    [Fact]
    public void A_saved_gptq_folder_loads_through_the_ordinary_loader_with_identical_logits()
    {
        var source = TestModels.FixturePath("hf", "llama");
        var output = Path.Combine(TestModels.TempDir(), "int4");
        using var ids = randint(0, 320, [1, 9]);
        using var _ = no_grad();
        var config = new GptqConfig(4, 32, Sym: true);
        Tensor want;
        using (var model = ModelFolder.Load(source))
        {
            var names = QuantizedModel.QuantizeRtn(model.Module, config);
            Assert.Equal(14, names.Count); // 2 layers × (q, k, v, o, gate, up, down); lm_head stays float
            want = model.AsCausalLM("test").forward(ids);
            QuantizedModel.Save(output, model.Module, model.Config, config);
        }
        var weights = SafeTensors.Load(Path.Combine(output, "model.safetensors"));
        Assert.Equal(ScalarType.Int32, weights["model.layers.0.self_attn.q_proj.qweight"].dtype);
        Assert.Equal([64 / 8, 64], weights["model.layers.0.self_attn.q_proj.qweight"].shape);
        Assert.Equal([2, 64 / 8], weights["model.layers.0.self_attn.q_proj.qzeros"].shape);
        Assert.Equal(ScalarType.Float16, weights["model.layers.0.self_attn.q_proj.scales"].dtype);
        Assert.Equal(ScalarType.Int32, weights["model.layers.0.self_attn.q_proj.g_idx"].dtype);
        Assert.DoesNotContain("model.layers.0.self_attn.q_proj.weight", weights.Keys);
        var q = ConfigJson.ReadFile(Path.Combine(output, "config.json"))["quantization_config"]!;
        Assert.Equal("gptq", (string)q["quant_method"]!);
        Assert.Equal(32, (int)q["group_size"]!);
        Assert.False((bool)q["desc_act"]!);

        using var loaded = ModelFolder.Load(output);
        Assert.Equal(14, QuantizedModel.Layers(loaded.Module).Count);
        Assert.Contains("is GPTQ-quantized", Assert.Throws<TianGongException>(() =>
            ModelFolder.Convert(output, Path.Combine(TestModels.TempDir(), "c"), ScalarType.Float32, 1L << 30)).Message);
        Assert.Equal(0, (want - loaded.AsCausalLM("test").forward(ids)).abs().max().item<float>());
        want.Dispose();
    }

    [Fact]
    public void A_quantization_config_without_packed_tensors_is_one_line()
    {
        var dir = TestModels.TempDir();
        foreach (var f in new[] { "config.json", "model.safetensors" }) File.Copy(TestModels.FixturePath("hf", "llama", f), Path.Combine(dir, f));
        var json = ConfigJson.ReadFile(Path.Combine(dir, "config.json"));
        json["quantization_config"] = new GptqConfig(4, 32, true).ToJson();
        File.WriteAllText(Path.Combine(dir, "config.json"), json.ToJsonString());
        var e = Assert.Throws<TianGongException>(() => ModelFolder.Load(dir));
        Assert.Contains("no '*.qweight' tensor", e.Message);

        json["quantization_config"]!["quant_method"] = "awq";
        File.WriteAllText(Path.Combine(dir, "config.json"), json.ToJsonString());
        Assert.Contains("quant_method 'awq' is not supported", Assert.Throws<TianGongException>(() => ModelFolder.Load(dir)).Message);
    }

    [Fact]
    [Trait("Category", "Slow")] // three CLI processes
    public void The_quantize_command_writes_a_folder_other_commands_load_and_refuses_models_without_linear_layers()
    {
        var output = Path.Combine(TestModels.TempDir(), "int8");
        var result = CliProcess.Run(TestModels.TempDir(), "quantize", "--model", TestModels.FixturePath("hf", "gpt2"), "--bits", "8", "--out", output);
        Assert.True(result.ExitCode == 0, result.All);
        Assert.Contains("quantized 8 linear layers (rtn) to int8", result.Stdout);
        Assert.True(File.Exists(Path.Combine(output, "generation_config.json")));
        using (var loaded = ModelFolder.Load(output)) Assert.Equal(8, QuantizedModel.Layers(loaded.Module).Count);

        var again = CliProcess.Run(TestModels.TempDir(), "quantize", "--model", output, "--bits", "4", "--out", Path.Combine(TestModels.TempDir(), "x"));
        Assert.Equal(1, again.ExitCode);
        Assert.Contains("already quantized", again.Stderr);

        var none = CliProcess.Run(TestModels.TempDir(), "quantize", "--model", TestModels.FixturePath("hf", "resnet"), "--bits", "8", "--out", Path.Combine(TestModels.TempDir(), "y"));
        Assert.Equal(1, none.ExitCode);
        Assert.Contains("match no linear layer", none.Stderr);
        Assert.Single(none.Stderr.Trim().Split('\n'));
    }
}
