using TianGong.Checkpoints;
using TianGong.Compression.Extraction;
using TianGong.Models;
using TianGong.Tests.Training;
using TianGong.Tests.Tuning;

namespace TianGong.Tests.Compression;

[Collection(nameof(GlobalRandomState))]
public class PruningTests
{
    [Theory]
    [InlineData("llama")]
    [InlineData("gpt2")]
    public void Keeping_every_head_and_channel_gives_identical_logits(string family)
    {
        var source = TuningFolders.Model(family);
        var output = Path.Combine(TestModels.TempDir(), "kept");
        var plan = LayerExtraction.Extract(source, output, [0, 1], new PruningOptions(family == "gpt2" ? null : 1.0, 1.0, TuningFolders.TextFile()))!;
        Assert.Equal(family == "gpt2" ? 128 : 64, plan.ChannelsKept);
        var (before, after) = Logits(source, output);
        Assert.Equal(0, (before - after).abs().max().item<float>());
    }

    [Theory]
    [InlineData("llama")]
    [InlineData("qwen2")] // q/k/v biases sliced with their rows
    public void Heads_and_channels_that_contribute_nothing_are_the_ones_pruned_and_the_logits_do_not_change(string family)
    {
        // 4 query heads in 2 key/value groups ({0,1}, {2,3}), head size 8, 64 MLP channels. Heads 1 and 2 (one per
        // group) write nothing through o_proj, and the odd MLP channels nothing through down_proj.
        var tokenizer = TuningFolders.Tokenizer();
        var source = TestModels.TempDir();
        using (var model = TestModels.Create(family, seed: 3, vocab: tokenizer.VocabSize))
        {
            using (no_grad())
                foreach (var (name, p) in model.named_parameters())
                {
                    if (name.EndsWith("o_proj.weight")) p.narrow(1, 8, 16).zero_();
                    if (name.EndsWith("down_proj.weight")) p[.., TensorIndex.Slice(1, null, 2)].zero_();
                }
            ModelFolder.Save(source, model, TestModels.Config(family, tokenizer.VocabSize).WithTokenizer(tokenizer.VocabSize, tokenizer.BosId, tokenizer.EosId), tokenizer);
        }
        var output = Path.Combine(TestModels.TempDir(), "pruned");
        var plan = LayerExtraction.Extract(source, output, [0, 1], new PruningOptions(0.5, 0.5, TuningFolders.TextFile()))!;

        for (int layer = 0; layer < 2; layer++)
        {
            Assert.Equal(new[] { 0, 3 }, plan.KeptHeads(layer));
            Assert.Equal(Enumerable.Range(0, 32).Select(i => 2 * i), plan.KeptChannels(layer));
        }
        var config = ConfigJson.ReadFile(Path.Combine(output, ModelFolder.ConfigFile));
        Assert.Equal(2, (int)config["num_attention_heads"]!);
        Assert.Equal(2, (int)config["num_key_value_heads"]!);
        Assert.Equal(8, (int)config["head_dim"]!);
        Assert.Equal(32, (int)config["intermediate_size"]!);
        using var pruned = ModelFolder.Load(output);
        var weights = pruned.Module.state_dict();
        Assert.Equal([16L, 32], weights["model.layers.0.self_attn.q_proj.weight"].shape);
        Assert.Equal([16L, 32], weights["model.layers.1.self_attn.k_proj.weight"].shape);
        Assert.Equal([32L, 16], weights["model.layers.0.self_attn.o_proj.weight"].shape);
        Assert.Equal([32L, 32], weights["model.layers.1.mlp.down_proj.weight"].shape);
        var (before, after) = Logits(source, output);
        Assert.True((before - after).abs().max().item<float>() < 1e-5f, "pruning units that contribute nothing changed the logits");
    }

    [Fact]
    public void Gpt2_mlp_channels_that_contribute_nothing_are_pruned_and_the_logits_do_not_change()
    {
        var tokenizer = TuningFolders.Tokenizer();
        var source = TestModels.TempDir();
        using (var model = TestModels.Create("gpt2", seed: 5, vocab: tokenizer.VocabSize))
        {
            using (no_grad())
                foreach (var (name, p) in model.named_parameters())
                    if (name.EndsWith("mlp.c_proj.weight")) p.narrow(0, 0, 96).zero_(); // Conv1D (in, out): channels 0..95 write nothing
            ModelFolder.Save(source, model, TestModels.Config("gpt2", tokenizer.VocabSize).WithTokenizer(tokenizer.VocabSize, tokenizer.BosId, tokenizer.EosId), tokenizer);
        }
        var output = Path.Combine(TestModels.TempDir(), "pruned");
        var plan = LayerExtraction.Extract(source, output, [0, 1], new PruningOptions(null, 0.25, TuningFolders.TextFile()))!;
        Assert.Equal(Enumerable.Range(96, 32), plan.KeptChannels(0));
        Assert.Equal(32, (int)ConfigJson.ReadFile(Path.Combine(output, ModelFolder.ConfigFile))["n_inner"]!);
        var (before, after) = Logits(source, output);
        Assert.True((before - after).abs().max().item<float>() < 1e-5f);
    }

    [Fact]
    public void Bad_fractions_and_heads_that_would_break_grouping_are_errors()
    {
        var llama = TuningFolders.Model("llama");
        var text = TuningFolders.TextFile();
        var output = Path.Combine(TestModels.TempDir(), "x");
        string Error(string dir, PruningOptions options) => Assert.Throws<TianGongException>(() => LayerExtraction.Extract(dir, output, [0, 1], options)).Message;
        Assert.Contains("(0, 1]", Error(llama, new(0, null, text)));
        Assert.Contains("(0, 1]", Error(llama, new(null, 1.5, text)));
        Assert.Contains("every query head of a key/value group", Error(llama, new(0.2, null, text)));
        Assert.Contains("every MLP channel", Error(llama, new(null, 0.001, text)));
        Assert.Contains("--calibration", Error(llama, new(0.5, null, null)));
        Assert.Contains("--mlp-keep", Error(TuningFolders.Model("gpt2"), new(0.5, null, text)));
        Assert.False(Directory.Exists(output));
    }

    [Fact]
    public void The_extract_command_prunes_heads_and_channels()
    {
        var output = Path.Combine(TestModels.TempDir(), "pruned");
        var result = Cli.CliProcess.Run(TestModels.TempDir(), "extract", "--model", TuningFolders.Model("llama"), "--keep-layers", "1",
            "--heads-keep", "0.5", "--mlp-keep", "0.75", "--calibration", TuningFolders.TextFile(), "--out", output);
        Assert.True(result.ExitCode == 0, result.All);
        Assert.Contains("pruned to 2 attention heads (2 key/value) and 48 MLP channels", result.Stdout);
        using var pruned = ModelFolder.Load(output);
        Assert.Equal(1, ((ICausalLMConfig)pruned.Config).LayerCount);
    }

    private static (Tensor Before, Tensor After) Logits(string source, string pruned)
    {
        using var a = ModelFolder.Load(source);
        using var b = ModelFolder.Load(pruned);
        var ids = tensor(a.Tokenizer!.Encode(TuningFolders.Poems[1]).Select(t => (long)t).ToArray()).unsqueeze(0);
        using var _ = no_grad();
        return (a.AsCausalLM("t").forward(ids), b.AsCausalLM("t").forward(ids));
    }
}
