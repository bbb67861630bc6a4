using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Compression.Quantization;
using TianGong.Models.Layers;
using TianGong.Tests.Models;

namespace TianGong.Tests.Compression;

public class GptqTests
{
    [Theory]
    [InlineData(4, 32, true)]
    [InlineData(4, -1, false)]
    [InlineData(8, -1, true)]
    public void Gptq_reconstructs_the_layer_output_on_its_calibration_inputs_better_than_rounding(int bits, int groupSize, bool sym)
    {
        manual_seed(11);
        // Correlated inputs (a random mixing of fewer sources), where compensating along H = 2XᵀX pays.
        using var x = randn(512, 48).matmul(randn(48, 128));
        using var w = randn(64, 128) * 0.05;
        using var h = x.t().matmul(x) * (2.0 / 512);
        var config = new GptqConfig(bits, groupSize, sym);
        var gptq = Gptq.QuantizeLayer(w, h, config);
        var rtn = QuantizedWeight.Rtn(w.contiguous().data<float>().ToArray(), 128, 64, config);
        using var want = x.matmul(w.t());
        double Error(QuantizedWeight q)
        {
            using var wq = tensor(q.Dequantize()).view(64, 128);
            using var diff = x.matmul(wq.t()) - want;
            return diff.square().sum().item<float>();
        }
        double e1 = Error(gptq), e0 = Error(rtn);
        Assert.True(e1 < 0.8 * e0, $"output error: GPTQ {e1}, RTN {e0}");
    }

    [Fact]
    public void A_gptq_model_saves_loads_and_stays_closer_to_fp32_than_rtn_on_the_calibration_text()
    {
        var dir = TestModels.FixturePath("hf", "llama");
        manual_seed(2);
        using var calibration = randint(0, 320, [8, 32]);
        using var _ = no_grad();
        using var fp32 = ModelFolder.Load(dir);
        using var reference = fp32.AsCausalLM("test").forward(calibration);
        var config = new GptqConfig(4, 32, Sym: true);

        using var rtn = ModelFolder.Load(dir);
        QuantizedModel.QuantizeRtn(rtn.Module, config);
        double rtnError = (rtn.AsCausalLM("test").forward(calibration) - reference).square().mean().item<float>();

        using var gptq = ModelFolder.Load(dir);
        var names = Gptq.Quantize(gptq.Module, config, () => gptq.AsCausalLM("test").forward(calibration).Dispose());
        Assert.Equal(14, names.Count);
        using var logits = gptq.AsCausalLM("test").forward(calibration);
        double gptqError = (logits - reference).square().mean().item<float>();
        Assert.True(gptqError < rtnError, $"mean squared logit error: GPTQ {gptqError}, RTN {rtnError}");

        var output = Path.Combine(TestModels.TempDir(), "gptq");
        QuantizedModel.Save(output, gptq.Module, gptq.Config, config);
        using var loaded = ModelFolder.Load(output);
        Assert.Equal(0, (loaded.AsCausalLM("test").forward(calibration) - logits).abs().max().item<float>());
    }
}
