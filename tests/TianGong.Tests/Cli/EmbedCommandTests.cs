using System.Text.Json.Nodes;

namespace TianGong.Tests.Cli;

/// <summary>`tiangong embed` on a copy of the transformers BERT fixture, through the real CLI.</summary>
[Trait("Category", "Slow")]
public class EmbedCommandTests
{
    [Fact]
    public void Embed_prints_the_pooled_vectors_transformers_computed()
    {
        var dir = CopyFixture();
        var expected = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "expected.json")))!;
        var ids = Data<long>(expected["inputs"]!["input_ids"]!);
        var types = Data<long>(expected["inputs"]!["token_type_ids"]!);
        var pooler = Data<float>(expected["outputs"]!["pooler_output"]!);        // (2, 64)
        var hidden = Data<float>(expected["outputs"]!["last_hidden_state"]!);    // (2, 12, 64)

        var r = CliProcess.Run(dir, "embed", "--model", dir, "--ids", Csv(ids[..12]), "--ids", Csv(ids[12..]),
            "--token-types", Csv(types[..12]), "--token-types", Csv(types[12..]), "--pooling", "pooler", "--json");
        Assert.True(r.ExitCode == 0, r.All);
        var json = JsonNode.Parse(r.Stdout)!;
        Assert.Equal(64, json["dim"]!.GetValue<int>());
        Assert.Equal("pooler", json["pooling"]!.GetValue<string>());
        var vectors = json["embeddings"]!.AsArray().Select(v => v!.AsArray().Select(x => x!.GetValue<float>()).ToArray()).ToList();
        Assert.Equal(2, vectors.Count);
        for (int b = 0; b < 2; b++)
            for (int c = 0; c < 64; c++)
                Assert.True(Math.Abs(vectors[b][c] - pooler[b * 64 + c]) < 1e-4, $"pooler[{b},{c}]: {vectors[b][c]} vs {pooler[b * 64 + c]}");

        // Mean pooling of row 1 (every token real): the average of transformers' hidden states over its 12 positions.
        var mean = CliProcess.Run(dir, "embed", "--model", dir, "--ids", Csv(ids[12..]), "--token-types", Csv(types[12..]), "--json");
        Assert.True(mean.ExitCode == 0, mean.All);
        var meanJson = JsonNode.Parse(mean.Stdout)!;
        Assert.Equal("mean", meanJson["pooling"]!.GetValue<string>());
        var meanVector = meanJson["embeddings"]![0]!.AsArray().Select(x => x!.GetValue<float>()).ToArray();
        for (int c = 0; c < 64; c++)
        {
            double want = Enumerable.Range(0, 12).Average(t => hidden[(12 + t) * 64 + c]);
            Assert.True(Math.Abs(meanVector[c] - want) < 1e-4, $"mean[{c}]: {meanVector[c]} vs {want}");
        }
    }

    [Fact]
    public void Embed_and_decoder_commands_say_what_they_need()
    {
        var dir = CopyFixture();
        var noTokenizer = CliProcess.Run(dir, "embed", "--model", dir, "--text", "hello");
        Assert.Equal(1, noTokenizer.ExitCode);
        Assert.Contains("tokenizer.json", noTokenizer.Stderr);
        Assert.Contains("--ids", noTokenizer.Stderr);

        var gpt2 = CliProcess.Run(dir, "embed", "--model", TestModels.FixturePath("hf", "gpt2"), "--ids", "1,2,3");
        Assert.Equal(1, gpt2.ExitCode);
        Assert.Contains("needs an encoder", gpt2.Stderr);
        Assert.Contains("'gpt2'", gpt2.Stderr);

        var score = CliProcess.Run(dir, "score", "--model", dir, "--ids", "1,2,3");
        Assert.Equal(1, score.ExitCode);
        Assert.Contains("'bert' is not", score.Stderr);
        Assert.DoesNotContain("   at ", score.All);
        var generate = CliProcess.Run(dir, "generate", "--model", dir, "--prompt", "x");
        Assert.Equal(1, generate.ExitCode);
        Assert.Contains("generate needs a decoder-only language model, but model_type 'bert'", generate.Stderr);
    }

    private static string CopyFixture()
    {
        var dir = Path.Combine(TestModels.TempDir(), "bert");
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(TestModels.FixturePath("hf", "bert"))) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        return dir;
    }

    private static T[] Data<T>(JsonNode node) => node["data"]!.AsArray().Select(x => x!.GetValue<T>()).ToArray();

    private static string Csv(IEnumerable<long> values) => string.Join(",", values);
}
