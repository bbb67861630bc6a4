using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Tests.Models;

namespace TianGong.Tests.Cli;

public class MergeCommandTests
{
    [Fact]
    public void Merge_writes_a_plain_folder_that_gives_peft_merged_logits()
    {
        var home = TestModels.TempDir();
        var output = Path.Combine(TestModels.TempDir(), "merged");
        var result = CliProcess.Run(home, "merge", "--model", TestModels.FixturePath("hf", "llama"),
            "--adapter", TestModels.FixturePath("peft", "llama"), "--out", output);
        Assert.True(result.ExitCode == 0, result.All);
        Assert.Contains("merged 4 LoRA layers", result.Stdout);
        Assert.True(File.Exists(Path.Combine(output, "generation_config.json")));

        var expected = JsonNode.Parse(File.ReadAllText(TestModels.FixturePath("peft", "llama", "expected.json")))!;
        using var merged = ModelFolder.Load(output);
        Assert.DoesNotContain(merged.Module.state_dict().Keys, k => k.Contains("lora"));
        using var ids = BertTests.FromFixture(expected["inputs"]!["input_ids"]!);
        using var want = BertTests.FromFixture(expected["outputs"]!["merged_logits"]!);
        using var _ = no_grad();
        double diff = (merged.AsCausalLM("test").forward(ids) - want).abs().max().item<float>();
        Assert.True(diff < 1e-4, $"max |ours - PEFT merged| = {diff}");
    }

    [Fact]
    public void An_adapter_that_does_not_fit_is_one_line_naming_the_tensor()
    {
        var result = CliProcess.Run(TestModels.TempDir(), "merge", "--model", TestModels.FixturePath("hf", "gpt2"),
            "--adapter", TestModels.FixturePath("peft", "llama"), "--out", Path.Combine(TestModels.TempDir(), "x"));
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("match no linear layer", result.Stderr);
        Assert.Single(result.Stderr.Trim().Split('\n'));
    }
}
