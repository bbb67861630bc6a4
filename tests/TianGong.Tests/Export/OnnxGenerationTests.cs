using TianGong.Checkpoints;
using TianGong.Export.Onnx;
using TianGong.Inference;
using TianGong.Tests.Cli;
using TianGong.Tokenizers;

namespace TianGong.Tests.Export;

/// <summary>
/// An exported decoder folder generates the same greedy tokens in ONNX Runtime GenAI (its own search loop, fed by
/// genai_config.json), in our ONNX Runtime session (<c>generate --onnx</c>) and in our TorchSharp model; the session and
/// the model share the decoding core, so sampled tokens, end-of-sequence and length limits agree too.
/// </summary>
public class OnnxGenerationTests
{
    private static readonly string[] Texts = ["春眠不覺曉，處處聞啼鳥。夜來風雨聲，花落知多少。", "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。", "hello world, hello onnx"];

    /// <summary>A model folder exported; the llama fixture (vocab 320) with a small byte-level BPE tokenizer beside it (gpt2's 256 ids are too few for one).</summary>
    private static (string Model, string Onnx) Exported(string family, int? bits = null)
    {
        var dir = OnnxExportTests.ModelDir(family);
        if (family == "hf-llama")
            ByteLevelBpeTrainer.Train(Enumerable.Repeat(Texts, 20).SelectMany(p => p), new BpeTrainerOptions(VocabSize: 300, MinFrequency: 2))
                .Save(Path.Combine(dir, "tokenizer.json"));
        var onnx = TestModels.TempDir();
        using var loaded = ModelFolder.Load(dir);
        OnnxExporter.Export(loaded, onnx, bits);
        return (dir, onnx);
    }

    private static SamplingOptions Greedy(int maxNew) => new(MaxNewTokens: maxNew, Temperature: 0, StopAtEos: false);

    /// <param name="withTokenizer">False: every id of the model may be chosen, as GenAI chooses (a tokenizer smaller than the vocabulary limits it).</param>
    private static GeneratedIds Ours(string dir, int[] prompt, SamplingOptions options, bool withTokenizer = true)
    {
        using var loaded = ModelFolder.Load(dir);
        return new TextGenerator(loaded.AsCausalLM("test"), withTokenizer ? loaded.Tokenizer : null).GenerateIds([prompt], options)[0];
    }

    private static GeneratedIds Onnx(string onnx, int[] prompt, SamplingOptions options, bool withTokenizer = true)
    {
        using var session = OnnxDecoderSession.Open(onnx);
        using var sequence = session.Decode(prompt, options, withTokenizer ? TokenizerLoader.Load(onnx) : null);
        return GeneratedIds.Of(sequence);
    }

    [Theory]
    [InlineData("hf-llama")]
    [InlineData("gpt2")] // the tiny config: the HF fixture's eos (50256) lies outside its 256 ids, which GenAI refuses
    public void OnnxRuntimeGenAI_greedy_tokens_equal_ours(string family)
    {
        var (dir, onnx) = Exported(family);
        int[] prompt = [5, 17, 3, 44, 9];
        const int maxNew = 10;
        var expected = Ours(dir, prompt, Greedy(maxNew), withTokenizer: false).Generated;

        Assert.Equal(expected, Onnx(onnx, prompt, Greedy(maxNew), withTokenizer: false).Generated);

        using var model = new Microsoft.ML.OnnxRuntimeGenAI.Model(onnx);
        using var parameters = new Microsoft.ML.OnnxRuntimeGenAI.GeneratorParams(model);
        parameters.SetSearchOption("max_length", prompt.Length + maxNew);
        using var generator = new Microsoft.ML.OnnxRuntimeGenAI.Generator(model, parameters);
        generator.AppendTokens(prompt);
        while (!generator.IsDone()) generator.GenerateNextToken();
        var sequence = generator.GetSequence(0).ToArray();
        // GenAI stops after end-of-text (genai_config's eos_token_id); ours above ran on past it.
        int eos = (int)ConfigJson.ReadFile(Path.Combine(onnx, "genai_config.json"))["model"]!["eos_token_id"]!;
        int stop = Array.IndexOf(expected, eos);
        Assert.Equal([.. prompt, .. stop < 0 ? expected : expected[..(stop + 1)]], sequence);
    }

    /// <summary>The int4 folder (MatMulNBits) runs in GenAI too, with the tokens our ONNX Runtime loop picks on it.</summary>
    [Fact]
    public void OnnxRuntimeGenAI_runs_the_int4_MatMulNBits_folder()
    {
        var (_, onnx) = Exported("hf-llama", bits: 4);
        int[] prompt = [5, 17, 3, 44, 9];
        var expected = Onnx(onnx, prompt, Greedy(8), withTokenizer: false).Generated;
        using var model = new Microsoft.ML.OnnxRuntimeGenAI.Model(onnx);
        using var parameters = new Microsoft.ML.OnnxRuntimeGenAI.GeneratorParams(model);
        parameters.SetSearchOption("max_length", prompt.Length + 8);
        using var generator = new Microsoft.ML.OnnxRuntimeGenAI.Generator(model, parameters);
        generator.AppendTokens(prompt);
        while (!generator.IsDone()) generator.GenerateNextToken();
        int eos = (int)ConfigJson.ReadFile(Path.Combine(onnx, "genai_config.json"))["model"]!["eos_token_id"]!;
        int stop = Array.IndexOf(expected, eos);                                   // GenAI stops after end-of-text
        Assert.Equal([.. prompt, .. stop < 0 ? expected : expected[..(stop + 1)]], generator.GetSequence(0).ToArray());
    }

    /// <summary>
    /// The session decodes through the same core as TextGenerator: greedy with end-of-sequence (dropped from the output),
    /// seeded sampling with top-k and a repetition penalty, a length limit: the same ids and finish reasons as the model.
    /// </summary>
    [Theory]
    [InlineData("hf-llama")]
    [InlineData("gpt2")]
    public void Onnx_session_decodes_what_the_model_decodes(string family)
    {
        var (dir, onnx) = Exported(family);
        // End-of-sequence: the first greedy token after the first that has not come before, so generation stops right
        // there. The tiny model's weights come from the global generator, which tests in parallel classes also draw
        // from, so a fixed position (once the 4th token) could repeat the 1st and end generation at once; and a random
        // model may repeat one token from a given prompt, so the first prompt of a few that does not is taken.
        int[][] prompts = [[5, 17, 3, 44, 9], [1, 2, 3], [60, 31, 7, 22], [40], [11, 50, 11, 50, 2]];
        var (prompt, greedy, end) = prompts
            .Select(p => (Prompt: p, Greedy: Ours(dir, p, Greedy(12)).Generated))
            .Select(r => (r.Prompt, r.Greedy, End: Enumerable.Range(1, r.Greedy.Length - 1).FirstOrDefault(i => Array.IndexOf(r.Greedy, r.Greedy[i]) == i)))
            .FirstOrDefault(r => r.End > 0);
        Assert.True(end > 0, "greedy decoding repeats one token after every prompt");
        SamplingOptions[] runs =
        [
            new(MaxNewTokens: 12, Temperature: 0, EosTokenIds: [greedy[end]]),
            new(MaxNewTokens: 12, Temperature: 0.9, TopK: 20, RepetitionPenalty: 1.3, Seed: 7),
            new(MaxNewTokens: 9, Temperature: 1.0, Seed: 11, StopAtEos: false),
        ];
        foreach (var options in runs)
        {
            var ours = Ours(dir, prompt, options);
            var onnxIds = Onnx(onnx, prompt, options);
            Assert.Equal(ours.Generated, onnxIds.Generated);
            Assert.Equal(ours.FinishReason, onnxIds.FinishReason);
            Assert.InRange(onnxIds.Generated.Length, 1, options.MaxNewTokens);
        }
        var eosRun = Onnx(onnx, prompt, runs[0]);
        Assert.Equal("stop", eosRun.FinishReason);
        Assert.Equal(greedy[..end], eosRun.Generated);
        Assert.Equal(9, Onnx(onnx, prompt, runs[2]).Generated.Length);
    }

    [Fact]
    [Trait("Category", "Slow")]
    public void Generate_onnx_prints_the_tokens_generate_model_prints()
    {
        var (dir, onnx) = Exported("hf-llama");
        var ids = "5,17,3,44,9";
        foreach (string[] flags in (string[][])[["--temperature", "0"], ["--temperature", "0.8", "--top-k", "30", "--seed", "5"]])
        {
            var torch = CliProcess.Run(dir, ["generate", "--model", dir, "--input-ids", ids, "--max-new-tokens", "8", .. flags]);
            var ort = CliProcess.Run(dir, ["generate", "--onnx", onnx, "--input-ids", ids, "--max-new-tokens", "8", .. flags]);
            Assert.True(torch.ExitCode == 0, torch.All);
            Assert.True(ort.ExitCode == 0, ort.All);
            Assert.Equal(torch.Stdout, ort.Stdout);                                 // the ids (as text) and "(n tokens, finish: ...)"
        }

        var missing = CliProcess.Run(dir, "generate", "--onnx", dir, "--input-ids", ids);
        Assert.Equal(1, missing.ExitCode);
        Assert.Contains("not an exported ONNX decoder folder", missing.All);

        var both = CliProcess.Run(dir, "generate", "--onnx", onnx, "--model", dir, "--input-ids", ids);
        Assert.Equal(1, both.ExitCode);
        Assert.Contains("give --model or --onnx, not both", both.All);
    }
}
