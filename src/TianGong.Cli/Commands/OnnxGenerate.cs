using Spectre.Console;
using TianGong.Export.Onnx;
using TianGong.Tokenizers;

namespace TianGong.Cli.Commands;

/// <summary>
/// <c>tiangong generate --onnx DIR</c>: greedy decoding of an exported decoder folder in ONNX Runtime, with our
/// tokenizer and no libtorch (the folder's model.onnx does all the arithmetic; past/present tensors carry the cache).
/// Prints what <c>generate --model</c> prints: the prompt and its continuation, or the generated ids.
/// </summary>
internal static class OnnxGenerate
{
    /// <param name="unsupportedOptions">The command line asked for more than greedy decoding of an ONNX folder (sampling, poem forms, --model too).</param>
    public static int Run(string dir, string[] prompts, string? inputIds, int? maxNewTokens, bool unsupportedOptions = false)
    {
        if (unsupportedOptions)
            throw new TianGongException("generate --onnx: greedy decoding only (no --temperature > 0, --acrostic or --form), and not together with --model");
        if (prompts.Length > 0 && inputIds is not null) throw new TianGongException("generate: give --prompt or --input-ids, not both");
        using var session = OnnxDecoderSession.Open(dir);
        var tokenizer = TokenizerLoader.Load(dir);
        int maxNew = maxNewTokens ?? 64;
        if (inputIds is not null)
        {
            var generated = session.GenerateGreedy(CliRunner.ParseIds(inputIds, "--input-ids"), maxNew,
                tokenizer is { EosId: >= 0 } ? tokenizer.EosId : null, tokenizer?.VocabSize);
            Console.WriteLine(tokenizer is null ? string.Join(",", generated) : tokenizer.Decode([.. generated], skipSpecialTokens: true));
            AnsiConsole.MarkupLineInterpolated($"[grey]({generated.Count} tokens, ONNX Runtime)[/]");
            return 0;
        }
        if (tokenizer is null) throw new TianGongException($"{dir}: no tokenizer.json; give --input-ids");
        foreach (var (text, i) in (prompts.Length > 0 ? prompts : [""]).Select((p, i) => (p, i)))
        {
            var ids = tokenizer.Encode(text);
            if (ids.Length == 0 && tokenizer.BosId >= 0) ids = [tokenizer.BosId];
            var generated = session.GenerateGreedy(ids, maxNew, tokenizer.EosId >= 0 ? tokenizer.EosId : null, tokenizer.VocabSize);
            if (i > 0) Console.WriteLine();
            Console.WriteLine(text + tokenizer.Decode([.. generated], skipSpecialTokens: true));
            AnsiConsole.MarkupLineInterpolated($"[grey]({generated.Count} tokens, ONNX Runtime)[/]");
        }
        return 0;
    }
}
