using TianGong.Checkpoints;
using TianGong.Models;
using TianGong.Poetry;
using TianGong.Tests.Cli;
using TianGong.Tokenizers;

namespace TianGong.Tests.Inference;

/// <summary>`tiangong generate` takes its defaults from generation_config.json, flags override them, and --form shapes a poem.</summary>
[Trait("Category", "Slow")]
public class GenerateCommandTests
{
    private static readonly string[] Poems =
    [
        "春眠不覺曉，處處聞啼鳥。\n夜來風雨聲，花落知多少。",
        "床前明月光，疑是地上霜。\n舉頭望明月，低頭思故鄉。",
    ];

    /// <summary>A tiny untrained GPT-2 with a byte-level BPE tokenizer, greedy by default.</summary>
    internal static string PoetFolder() => Folder("""{"do_sample": false, "max_new_tokens": 8}""");

    private static string Folder(string generationConfig)
    {
        var tokenizer = ByteLevelBpeTrainer.Train(Enumerable.Repeat(Poems, 20).SelectMany(p => p), new BpeTrainerOptions(VocabSize: 320, MinFrequency: 2));
        manual_seed(4);
        var config = TestModels.Gpt2(tokenizer.VocabSize) with { NPositions = 256, BosTokenId = tokenizer.BosId, EosTokenId = tokenizer.EosId };
        using var model = ModelConfigs.CreateCausalLM(config);
        model.InitializeWeights();
        var dir = Path.Combine(TestModels.TempDir(), "poet");
        ModelFolder.Save(dir, model, config, tokenizer);
        File.WriteAllText(Path.Combine(dir, "generation_config.json"), generationConfig);
        return dir;
    }

    [Fact]
    public void Defaults_come_from_generation_config_and_flags_override_them()
    {
        var dir = Folder("""{"do_sample": false, "temperature": 1.7, "max_new_tokens": 4, "transformers_version": "5.3.0"}""");
        CliProcess.Result Generate(params string[] flags)
        {
            var r = CliProcess.Run(dir, ["generate", "--model", dir, "--prompt", "春", .. flags]);
            Assert.True(r.ExitCode == 0, r.All);
            return r;
        }
        var byDefault = Generate();
        Assert.Contains("(4 tokens, finish: length)", byDefault.Stdout);                        // max_new_tokens from the file
        Assert.Equal(Generate("--temperature", "0", "--max-new-tokens", "4").Stdout, byDefault.Stdout); // do_sample false: greedy
        Assert.Contains("(6 tokens, finish: length)", Generate("--max-new-tokens", "6").Stdout);
        var sampled = Generate("--temperature", "1.5", "--top-k", "0", "--max-new-tokens", "12", "--seed", "1");
        Assert.NotEqual(Generate("--max-new-tokens", "12").Stdout, sampled.Stdout);
    }

    [Fact]
    public void Form_and_acrostic_flags_write_a_poem_of_that_shape()
    {
        var dir = Folder("""{"do_sample": true, "temperature": 0.9, "top_k": 40, "max_new_tokens": 8}""");
        var r = CliProcess.Run(dir, "generate", "--model", dir, "--prompt", "春夜", "--form", "jueju5", "--acrostic", "春夜花月", "--seed", "2");
        Assert.True(r.ExitCode == 0, r.All);
        var lines = r.Stdout.Split('\n');
        Assert.Equal("春夜", lines[0]);
        var poem = string.Join('\n', lines[1..5]);
        Assert.True(VerseForm.Jueju5.Matches(poem), r.Stdout);
        for (int i = 0; i < 4; i++) Assert.StartsWith("春夜花月"[i].ToString(), lines[1 + i]);
        Assert.Contains("finish: stop", r.Stdout);

        var bad = CliProcess.Run(dir, "generate", "--model", dir, "--prompt", "x", "--form", "haiku");
        Assert.Equal(1, bad.ExitCode);
        Assert.Contains("unknown verse form 'haiku'", bad.All);
    }
}
