using TianGong.Checkpoints;
using TianGong.Export.Onnx;
using TianGong.Inference;
using TianGong.Tests.Cli;
using TianGong.Tokenizers;

namespace TianGong.Tests.Export;

/// <summary>
/// An exported decoder folder generates the same greedy tokens in ONNX Runtime GenAI (its own search loop, fed by
/// genai_config.json), in our ONNX Runtime loop (<c>generate --onnx</c>) and in our TorchSharp model.
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

    private static int[] Ours(string dir, int[] prompt, int maxNew)
    {
        using var loaded = ModelFolder.Load(dir);
        var options = new SamplingOptions(MaxNewTokens: maxNew, Temperature: 0, StopAtEos: false);
        return new TextGenerator(loaded.AsCausalLM("test"), tokenizer: null).GenerateIds([prompt], options)[0].Generated;
    }

    [Theory]
    [InlineData("hf-llama")]
    [InlineData("gpt2")] // the tiny config: the HF fixture's eos (50256) lies outside its 256 ids, which GenAI refuses
    public void OnnxRuntimeGenAI_greedy_tokens_equal_ours(string family)
    {
        var (dir, onnx) = Exported(family);
        int[] prompt = [5, 17, 3, 44, 9];
        const int maxNew = 10;
        var expected = Ours(dir, prompt, maxNew);

        using (var session = OnnxDecoderSession.Open(onnx))
            Assert.Equal(expected, session.GenerateGreedy(prompt, maxNew, eos: -1));

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
        List<int> expected;
        using (var session = OnnxDecoderSession.Open(onnx))
            expected = session.GenerateGreedy(prompt, 8);
        using var model = new Microsoft.ML.OnnxRuntimeGenAI.Model(onnx);
        using var parameters = new Microsoft.ML.OnnxRuntimeGenAI.GeneratorParams(model);
        parameters.SetSearchOption("max_length", prompt.Length + 8);
        using var generator = new Microsoft.ML.OnnxRuntimeGenAI.Generator(model, parameters);
        generator.AppendTokens(prompt);
        while (!generator.IsDone()) generator.GenerateNextToken();
        Assert.Equal([.. prompt, .. expected], generator.GetSequence(0).ToArray());
    }

    [Fact]
    [Trait("Category", "Slow")]
    public void Generate_onnx_prints_the_tokens_generate_model_prints()
    {
        var (dir, onnx) = Exported("hf-llama");
        var ids = "5,17,3,44,9";
        var torch = CliProcess.Run(dir, "generate", "--model", dir, "--input-ids", ids, "--temperature", "0", "--max-new-tokens", "8", "--repetition-penalty", "1");
        var ort = CliProcess.Run(dir, "generate", "--onnx", onnx, "--input-ids", ids, "--max-new-tokens", "8");
        Assert.True(torch.ExitCode == 0, torch.All);
        Assert.True(ort.ExitCode == 0, ort.All);
        Assert.Equal(torch.Stdout.Split('\n')[0], ort.Stdout.Split('\n')[0]);

        var missing = CliProcess.Run(dir, "generate", "--onnx", dir, "--input-ids", ids);
        Assert.Equal(1, missing.ExitCode);
        Assert.Contains("not an exported ONNX decoder folder", missing.All);

        var sampling = CliProcess.Run(dir, "generate", "--onnx", onnx, "--input-ids", ids, "--temperature", "0.8");
        Assert.Equal(1, sampling.ExitCode);
        Assert.Contains("greedy decoding only", sampling.All);
    }
}
