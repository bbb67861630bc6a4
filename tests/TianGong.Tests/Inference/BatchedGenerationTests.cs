using TianGong.Inference;
using TianGong.Tests.Cli;

namespace TianGong.Tests.Inference;

public class BatchedGenerationTests
{
    [Theory]
    [MemberData(nameof(TestModels.DecoderFamilies), MemberType = typeof(TestModels))]
    public void A_left_padded_batch_of_prompts_of_lengths_3_7_12_generates_what_each_prompt_generates_alone(string family)
    {
        using var model = TestModels.Create(family, seed: 11);
        var generator = new TextGenerator(model, tokenizer: null);
        int[][] prompts = [[5, 17, 3], [9, 2, 44, 61, 7, 30, 12], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]];
        var options = new SamplingOptions(MaxNewTokens: 10, Temperature: 0, StopAtEos: false);
        var batched = generator.GenerateIds(prompts, options);
        for (int i = 0; i < prompts.Length; i++)
        {
            var alone = generator.GenerateIds([prompts[i]], options)[0];
            Assert.Equal(alone.Generated, batched[i].Generated);
            Assert.Equal(10, batched[i].Generated.Length);
        }
    }

    [Fact]
    public void Seeded_sampling_in_a_padded_batch_equals_each_prompt_alone()
    {
        using var model = TestModels.Create("llama", seed: 5);
        var generator = new TextGenerator(model, tokenizer: null);
        int[][] prompts = [[3, 9], [8, 8, 1, 40, 2]];
        var options = new SamplingOptions(MaxNewTokens: 8, Temperature: 1.0, Seed: 99, StopAtEos: false);
        var batched = generator.GenerateIds(prompts, options);
        for (int i = 0; i < prompts.Length; i++)
            Assert.Equal(generator.GenerateIds([prompts[i]], options)[0].Generated, batched[i].Generated);
    }

    [Fact]
    [Trait("Category", "Slow")]
    public void Generate_prints_one_result_per_prompt_each_as_it_is_alone()
    {
        var dir = GenerateCommandTests.PoetFolder();
        string Run(params string[] prompts)
        {
            var args = new List<string> { "generate", "--model", dir, "--temperature", "0", "--max-new-tokens", "6" };
            foreach (var p in prompts) args.AddRange(["--prompt", p]);
            var r = CliProcess.Run(dir, [.. args]);
            Assert.True(r.ExitCode == 0, r.All);
            return r.Stdout;
        }
        var both = Run("春", "床前明月光");
        Assert.Equal(Run("春") + "\n" + Run("床前明月光"), both);
    }
}
