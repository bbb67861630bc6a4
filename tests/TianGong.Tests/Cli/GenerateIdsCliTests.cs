using TianGong.Checkpoints;
using TianGong.Models;
using TianGong.Tests.Models;

namespace TianGong.Tests.Cli;

/// <summary>`tiangong generate --input-ids` on folders without a tokenizer: an encoder-decoder (T5) and a decoder-only model.</summary>
[Trait("Category", "Slow")]
public class GenerateIdsCliTests
{
    private static string CopyFixture(string family)
    {
        var dir = Path.Combine(TestModels.TempDir(), family);
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(TestModels.FixturePath("hf", family)))
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        return dir;
    }

    [Fact]
    public void T5_greedy_generation_prints_the_ids_of_greedy_full_passes()
    {
        var dir = CopyFixture("t5");
        int[] source = [12, 40, 7, 99, 3, 250];
        // A repetition penalty (applied by the reference too) keeps this random tiny model from repeating one token,
        // so a wrong position or stale cache entry would show in the ids.
        var r = CliProcess.Run(dir, "generate", "--model", dir, "--input-ids", string.Join(",", source), "--temperature", "0",
            "--max-new-tokens", "10", "--repetition-penalty", "1.5");
        Assert.True(r.ExitCode == 0, r.All);

        using var loaded = ModelFolder.Load(dir);
        var (expected, finish) = T5Tests.GreedyByFullPasses((Seq2SeqLM)loaded.Module, source, 10, repetitionPenalty: 1.5);
        Assert.True(expected.Distinct().Count() > 5, string.Join(",", expected));
        var lines = r.Stdout.Split('\n');
        Assert.Equal(string.Join(",", expected), lines[0].Trim());
        Assert.Contains($"({expected.Length} tokens, finish: {finish})", r.Stdout);

        var both = CliProcess.Run(dir, "generate", "--model", dir, "--input-ids", "1,2", "--prompt", "x");
        Assert.Equal(1, both.ExitCode);
        Assert.Contains("--input-ids", both.All);
    }

    [Fact]
    public void Decoder_only_model_takes_input_ids_without_a_tokenizer()
    {
        var dir = CopyFixture("llama");
        int[] prompt = [5, 17, 3];
        var r = CliProcess.Run(dir, "generate", "--model", dir, "--input-ids", string.Join(",", prompt), "--temperature", "0",
            "--max-new-tokens", "6", "--repetition-penalty", "1");
        Assert.True(r.ExitCode == 0, r.All);

        using var loaded = ModelFolder.Load(dir);
        var model = loaded.AsCausalLM("test");
        var ids = prompt.Select(i => (long)i).ToList();
        var expected = new List<int>();
        using (no_grad())
        {
            for (int i = 0; i < 6; i++)
            {
                using var scope = NewDisposeScope();
                int next = (int)model.forward(tensor(ids.ToArray(), [1, ids.Count]))[0, -1].argmax().item<long>();
                if (next == model.Config.EosTokenId) break;
                expected.Add(next);
                ids.Add(next);
            }
        }
        Assert.Equal(string.Join(",", expected), r.Stdout.Split('\n')[0].Trim());
    }
}

/// <summary>--dtype on model-taking commands: the folder's dtype by default, another on request, a bad name in one line.</summary>
[Trait("Category", "Slow")]
public class ModelDTypeCliTests
{
    [Fact]
    public void Score_in_bfloat16_is_close_to_float32_and_a_bad_dtype_is_one_line()
    {
        var fixture = TestModels.FixturePath("hf", "gpt2");
        var home = TestModels.TempDir();
        double Perplexity(params string[] extra)
        {
            var r = CliProcess.Run(home, ["score", "--model", fixture, "--ids", "3,1,4,1,5,9,2,6", "--json", .. extra]);
            Assert.True(r.ExitCode == 0, r.All);
            return System.Text.Json.Nodes.JsonNode.Parse(r.Stdout)!["perplexity"]!.GetValue<double>();
        }
        double fp32 = Perplexity(), bf16 = Perplexity("--dtype", "bfloat16");
        Assert.NotEqual(fp32, bf16);                                                            // really ran in bf16
        Assert.True(Math.Abs(bf16 - fp32) / fp32 < 0.05, $"fp32 {fp32}, bf16 {bf16}");

        var bad = CliProcess.Run(home, "score", "--model", fixture, "--ids", "1,2", "--dtype", "int8");
        Assert.Equal(1, bad.ExitCode);
        Assert.Contains("--dtype: must be float32, bfloat16 or float16, got 'int8'", bad.Stderr);
    }
}
