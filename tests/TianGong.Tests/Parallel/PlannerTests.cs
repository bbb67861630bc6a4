using System.Text.Json.Nodes;
using TianGong.Parallelism.Planning;
using TianGong.Tests.Cli;

namespace TianGong.Tests.Parallel;

public class PlannerTests
{
    private static readonly ModelShape Gpt3 = ModelShape.Presets["gpt3-175b"];
    private static readonly Cluster Selene1024 = new(1024, 80, 312, 300, 25, 8);

    [Fact]
    public void Optimizer_state_per_parameter_follows_the_zero_stages()
    {
        Assert.Equal(18, Planner.StateBytesPerParameter(0, 4));     // bf16 weight 2 + fp32 grad 4 + fp32 master, m, v 12
        Assert.Equal(2 + 4 + 3, Planner.StateBytesPerParameter(1, 4));
        Assert.Equal(2 + 1 + 3, Planner.StateBytesPerParameter(2, 4));
    }

    [Fact]
    public void Activation_memory_per_layer_matches_korthikanti_by_hand()
    {
        var planner = new Planner(Gpt3, Selene1024, 1536, 2048);
        const double sbh = 2048.0 * 1 * 12288; // s·b·h = 25,165,824
        Assert.Equal(sbh * (34.0 / 8 + 5.0 * 96 * 2048 / (12288 * 8)), planner.ActivationBytesPerLayer(new PlanLayout(16, 8, 8, 1)), 1e-3);
        Assert.Equal(358_612_992, planner.ActivationBytesPerLayer(new PlanLayout(16, 8, 8, 1)), 1e-3);
        Assert.Equal(106_954_752, planner.ActivationBytesPerLayer(new PlanLayout(16, 8, 8, 1, Recompute: "selective")), 1e-3);
        Assert.Equal(6_291_456, planner.ActivationBytesPerLayer(new PlanLayout(16, 8, 8, 1, Recompute: "full")), 1e-3);
    }

    [Fact]
    public void Parameters_and_flops_match_the_published_formulas()
    {
        Assert.Equal(174.6e9, Gpt3.Parameters, 0.1e9);
        Assert.Equal(1008.0e9, ModelShape.Presets["megatron-1t"].Parameters, 0.5e9); // "1008.0B" in Narayanan et al.'s table
        var planner = new Planner(Gpt3, Selene1024, 1536, 2048);
        // 12 layers of 12h² + 2h and the embedding, split over 8 tensor-parallel ranks.
        Assert.Equal((12 * (12.0 * 12288 * 12288 + 2 * 12288) + 51200.0 * 12288) / 8, planner.ParametersPerDevice(new PlanLayout(16, 8, 8, 1)), 1);
        // Narayanan et al. 2021: model FLOPs 72·B·s·L·h²(1 + s/6h + V/12Lh); with full recomputation 96·B·s·L·h²(1 + s/6h + V/16Lh).
        double L = 96, h = 12288, s = 2048, V = 51200;
        double model = 72 * L * h * h * (1 + s / (6 * h) + V / (12 * L * h));
        double full = 96 * L * h * h * (1 + s / (6 * h) + V / (16 * L * h));
        Assert.Equal(1, planner.ModelFlopsPerToken / model, 9);
        Assert.Equal(1, (planner.ModelFlopsPerToken + planner.RecomputeFlopsPerToken("full")) / full, 9);
    }

    [Fact]
    public void The_published_trillion_parameter_run_is_predicted_within_two_percent()
    {
        var planner = new Planner(ModelShape.Presets["megatron-1t"], new Cluster(3072, 80, 312, 300, 25, 8), 3072, 2048);
        var e = planner.Evaluate(PlanLayout.Parse("tp=8,pp=64,dp=6,micro_batch=1,recompute=full", 3072));
        Assert.True(e.Fits, e.Problem);
        Assert.Equal(163, e.HwTflopsPerDevice, 163 * 0.02); // published: 163 TFLOP/s per GPU (with the recomputed forward)
        Assert.True(e.Mfu < e.Hfu);
    }

    [Fact]
    public void Search_returns_fitting_layouts_fastest_first_and_nothing_when_nothing_fits()
    {
        var planner = new Planner(Gpt3, Selene1024, 1536, 2048);
        var found = planner.Search();
        Assert.NotEmpty(found);
        Assert.All(found, e => Assert.True(e.Fits && e.MemoryGB <= 80));
        Assert.Equal(found.OrderBy(e => e.StepSeconds).Select(e => e.StepSeconds), found.Select(e => e.StepSeconds));
        Assert.Empty(new Planner(Gpt3, new Cluster(8, 80, 312, 300, 25, 8), 64, 2048).Search()); // 175B does not fit on 8 GPUs
        // Without ZeRO, sharding optimizer state on a too-small memory budget must be what makes a layout fit.
        var onePerNode = planner.Evaluate(new PlanLayout(16, 8, 8, 1, Zero: 0));
        var zero1 = planner.Evaluate(new PlanLayout(16, 8, 8, 1, Zero: 1));
        Assert.True(zero1.MemoryGB < onePerNode.MemoryGB);
    }

    [Theory]
    [InlineData("tp=5", "does not divide the 96 attention heads")]
    [InlineData("tp=8,pp=4,dp=1", "dp·tp·pp")]
    [InlineData("tp=8,pp=8,dp=16,micro_batch=7", "not a multiple of dp·micro_batch")]
    [InlineData("tp=8,pp=128,dp=1", "more than the 96 layers")]
    public void Impossible_layouts_are_named(string layout, string problem)
    {
        var planner = new Planner(Gpt3, Selene1024, 1536, 2048);
        Assert.Contains(problem, planner.Check(PlanLayout.Parse(layout, 1024)));
    }

    [Fact]
    public void A_hugging_face_config_gives_the_shape_with_gpt2_or_llama_field_names()
    {
        var gpt2 = ModelShape.FromConfigJson(JsonNode.Parse("""{"model_type":"gpt2","n_embd":768,"n_layer":12,"n_head":12,"vocab_size":50257,"n_positions":1024}""")!, "gpt2/config.json");
        Assert.Equal((12, 768, 3072, 1024, true, false), (gpt2.Layers, gpt2.Hidden, gpt2.Ffn, gpt2.DefaultSeq, gpt2.TiedEmbeddings, gpt2.GatedMlp));
        Assert.Equal(124.4e6, gpt2.Parameters, 1.5e6); // GPT-2 small: 124.4M, of which biases and position embeddings (0.9M) are not counted
        var llama = ModelShape.FromConfigJson(JsonNode.Parse("""{"model_type":"llama","hidden_size":4096,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,"intermediate_size":14336,"vocab_size":128256,"max_position_embeddings":8192}""")!, "l/config.json");
        Assert.Equal(8.0e9, llama.Parameters, 0.1e9); // Llama 3 8B
        var e = Assert.Throws<TianGongException>(() => ModelShape.FromConfigJson(JsonNode.Parse("""{"hidden_size":64}""")!, "bad/config.json"));
        Assert.Contains("num_hidden_layers", e.Message);
    }

    [Fact]
    public void The_cli_prints_json_with_the_documented_fields()
    {
        var run = CliProcess.Run(TestModels.TempDir(), "plan", "--model", "gpt3-175b", "--devices", "1024", "--top", "3", "--json");
        Assert.True(run.ExitCode == 0, run.All);
        var array = JsonNode.Parse(run.Stdout)!.AsArray();
        Assert.Equal(3, array.Count);
        foreach (var key in new[] { "dp", "tp", "pp", "micro_batch", "zero", "recompute", "memory_gb", "step_s", "tokens_per_s", "tflops_per_device", "mfu", "hw_tflops_per_device", "hfu" })
            Assert.NotNull(array[0]![key]);
        Assert.Equal(1024, (int)array[0]!["dp"]! * (int)array[0]!["tp"]! * (int)array[0]!["pp"]!);
    }
}
