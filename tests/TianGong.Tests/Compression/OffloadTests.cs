using TianGong.Checkpoints;
using TianGong.Inference;
using TianGong.Inference.Offload;
using TianGong.Models;
using TianGong.Tests.Checkpoints;

namespace TianGong.Tests.Compression;

/// <summary>Streaming loads build on the meta device (a process-wide default for a moment): run alone, like MetaLoadingTests.</summary>
[Collection(nameof(GlobalTorchDefaults))]
public sealed class OffloadTests
{
    [Theory]
    [InlineData("gpt2", null)]
    [InlineData("llama", null)]
    [InlineData("llama", "bfloat16")] // a bfloat16 file run in float32: streamed matrices are converted on each use, as the whole load converts them once
    public void Greedy_generation_with_streamed_layers_gives_the_tokens_of_the_model_in_memory(string family, string? fileDType)
    {
        var dir = FourLayerModel(family, fileDType is null ? ScalarType.Float32 : ModelFolder.ParseDType(fileDType, "dtype"));
        ScalarType? dtype = fileDType is null ? null : ScalarType.Float32;
        using var whole = ModelFolder.Load(dir, dtype);
        var expected = Greedy(whole);
        Assert.False(OffloadedModel.Streams(whole.Module));
        var full = Plan(dir, dtype ?? ScalarType.Float32, long.MaxValue);
        long layer = (full.TotalBytes - full.AlwaysBytes) / 4;             // one layer's matrices in memory
        long fromFile = dtype is null ? layer : layer / 2;                  // ... as the bfloat16 file holds them
        long converted = dtype is null ? 0 : 64 * 32 * 4;                   // the largest matrix, converted for one call
        long streamAll = full.AlwaysBytes + 2 * fromFile + converted;
        foreach (var (cap, resident) in new[] { (streamAll, 0), (streamAll + layer, 1) })
        {
            using var streamed = OffloadedModel.Load(dir, dtype, cap, out var plan);
            Assert.Equal(resident, plan.ResidentLayers);
            Assert.True(plan.PeakWeightBytes <= cap);
            Assert.Equal(4 - resident, plan.StreamedLayers.Count);
            Assert.True(OffloadedModel.Streams(streamed.Module)); // so the serving engine leaves its weights in the file
            Assert.Equal(expected, Greedy(streamed));
            Assert.Equal(expected, Greedy(streamed)); // a second pass: layers released and brought back in
        }
    }

    [Fact]
    public void A_cap_that_fits_the_model_loads_it_whole()
    {
        var dir = FourLayerModel("llama");
        using var loaded = OffloadedModel.Load(dir, null, 1L << 30, out var plan);
        Assert.Equal(plan.LayerCount, plan.ResidentLayers);
        Assert.Empty(plan.StreamedKeys);
    }

    [Fact]
    public void A_cap_below_the_always_resident_part_is_an_error_naming_the_sizes()
    {
        var dir = FourLayerModel("llama");
        var full = Plan(dir, ScalarType.Float32, long.MaxValue);
        var error = Assert.Throws<TianGongException>(() => OffloadedModel.Load(dir, null, full.AlwaysBytes - 1, out _));
        Assert.Contains("--max-memory", error.Message);
        Assert.Contains("at least", error.Message);
        Assert.Contains("embeddings, LM head and norms", error.Message);
    }

    [Fact]
    public void The_generate_command_streams_under_max_memory_and_prints_the_same_text()
    {
        var dir = FourLayerModel("gpt2");
        string[] args = ["generate", "--model", dir, "--input-ids", "1,2,3", "--max-new-tokens", "8", "--temperature", "0"];
        var inMemory = Cli.CliProcess.Run(TestModels.TempDir(), args);
        var streamed = Cli.CliProcess.Run(TestModels.TempDir(), [.. args, "--max-memory", "150KB"]);
        Assert.True(inMemory.ExitCode == 0, inMemory.All);
        Assert.True(streamed.ExitCode == 0, streamed.All);
        Assert.Equal(inMemory.Stdout, streamed.Stdout);
        var tooSmall = Cli.CliProcess.Run(TestModels.TempDir(), [.. args, "--max-memory", "1KB"]);
        Assert.Equal(1, tooSmall.ExitCode);
        Assert.Contains("too small", tooSmall.Stderr);
        var bad = Cli.CliProcess.Run(TestModels.TempDir(), [.. args, "--max-memory", "lots"]);
        Assert.Contains("--max-memory: 'lots' is not a size", bad.Stderr);
    }

    private static int[] Greedy(LoadedModel loaded)
    {
        var generator = new TextGenerator(loaded.AsCausalLM("test"), null);
        return generator.GenerateIds([[1, 2, 3], [4, 5, 6]], new SamplingOptions(MaxNewTokens: 12, Temperature: 0, StopAtEos: false))
            .SelectMany(r => r.Generated).ToArray();
    }

    private static OffloadPlan Plan(string dir, ScalarType dtype, long cap)
    {
        using var weights = CheckpointWeights.Open(dir);
        return OffloadedModel.Plan(weights, dtype, cap, dir);
    }

    /// <summary>A 4-layer model of the family with larger weights (so greedy tokens vary), saved in <paramref name="dtype"/>.</summary>
    private static string FourLayerModel(string family, ScalarType dtype = ScalarType.Float32)
    {
        var dir = TestModels.TempDir();
        ICausalLMConfig config = family == "gpt2" ? TestModels.Gpt2() with { NLayer = 4 } : TestModels.Llama() with { NumHiddenLayers = 4 };
        manual_seed(11);
        using var model = ModelConfigs.CreateCausalLM(config);
        model.InitializeWeights();
        using (no_grad())
            foreach (var (_, p) in model.named_parameters()) p.mul_(4);
        model.to(dtype);
        ModelFolder.Save(dir, model, config, null);
        return dir;
    }
}
