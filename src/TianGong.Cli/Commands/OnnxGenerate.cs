using Spectre.Console;
using TianGong.Export.Onnx;
using TianGong.Inference;
using TianGong.Poetry;
using TianGong.Tokenizers;

namespace TianGong.Cli.Commands;

/// <summary>
/// <c>tiangong generate --onnx DIR</c>: an exported decoder folder run in ONNX Runtime (the folder's model.onnx does the
/// model's arithmetic; past/present tensors carry the cache), with our tokenizer and the decoding core <c>generate --model</c>
/// uses, fed by the folder's generation_config.json and the same flags. Prints what <c>generate --model</c> prints:
/// the prompt and its continuation, or the generated ids. Prompts are decoded one after another, not batched.
/// </summary>
internal static class OnnxGenerate
{
    public static int Run(string dir, string[] prompts, int[]? inputIds, SamplingOptions options, VerseForm? verse, string? heads, bool maxNewGiven)
    {
        using var session = OnnxDecoderSession.Open(dir);
        var tokenizer = TokenizerLoader.Load(dir);
        if (inputIds is not null)
        {
            using var sequence = session.Decode(inputIds, options, tokenizer);
            GenerateCommand.PrintIdsResult(GeneratedIds.Of(sequence), tokenizer);
            return 0;
        }
        if (tokenizer is null) throw new TianGongException($"{dir}: no tokenizer.json; give --input-ids");
        var (texts, poemOptions, constraint) = GenerateCommand.ForPoem(tokenizer, prompts, options, verse, heads, maxNewGiven);
        for (int i = 0; i < texts.Length; i++)
        {
            var ids = tokenizer.Encode(texts[i]) is { Length: > 0 } e ? e : [tokenizer.BosId];
            using var sequence = session.Decode(ids, poemOptions, tokenizer, constraint);
            if (i > 0) Console.WriteLine();
            Console.WriteLine(texts[i] + sequence.Text());
            AnsiConsole.MarkupLineInterpolated($"[grey]({sequence.Generated.Count} tokens, finish: {sequence.FinishReason})[/]");
        }
        return 0;
    }
}
