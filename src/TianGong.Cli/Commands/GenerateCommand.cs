using System.CommandLine;
using Spectre.Console;
using TianGong.Checkpoints;
using TianGong.Inference;
using TianGong.Models;
using TianGong.Poetry;

namespace TianGong.Cli.Commands;

internal static class GenerateCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model folder (config.json, model.safetensors, tokenizer.json)" };
        var onnx = new Option<string?>("--onnx") { Description = "An exported ONNX folder (tiangong export onnx) instead of --model: the model runs in ONNX Runtime, tokens are chosen as with --model" };
        var prompt = new Option<string[]>("--prompt")
        {
            Description = "Text to continue (with --acrostic or --form: the title line); repeat it to generate for several prompts in one batch",
            AllowMultipleArgumentsPerToken = false,
        };
        // Sampling flags have no defaults of their own: unset ones take the folder's generation_config.json (HF semantics).
        var maxNew = new Option<int?>("--max-new-tokens") { Description = "Most tokens to generate (default: generation_config.json, else 64)" };
        var minNew = new Option<int?>("--min-new-tokens") { Description = "End-of-text is not allowed before this many tokens" };
        var temperature = new Option<double?>("--temperature") { Description = "Sampling temperature; 0 is greedy decoding (default: generation_config.json; greedy without do_sample)" };
        var topK = new Option<int?>("--top-k") { Description = "Sample among the k most likely tokens (0: off)" };
        var topP = new Option<double?>("--top-p") { Description = "Nucleus sampling mass (1: off)" };
        var penalty = new Option<double?>("--repetition-penalty") { Description = "Penalty for tokens already present (1: off)" };
        var seed = new Option<long?>("--seed") { Description = "Random seed (same seed, same output)" };
        var stop = new Option<string[]>("--stop") { Description = "Stop when this text is generated (repeatable)", AllowMultipleArgumentsPerToken = false };
        var acrostic = new Option<string?>("--acrostic") { Description = "藏头诗: line i starts with the i-th of these characters" };
        var form = new Option<string?>("--form") { Description = "Regulated verse: jueju5, jueju7 (4 lines), lushi5 or lushi7 (8 lines) of 5 or 7 characters" };
        var inputIds = new Option<string?>("--input-ids") { Description = "Token ids instead of --prompt, comma-separated (for folders without tokenizer.json)" };
        var command = new Command("generate", "Generate text with a model (decoder-only or encoder-decoder)") { model, prompt, maxNew, minNew, temperature, topK, topP, penalty, seed, stop, acrostic, form, inputIds, onnx };
        var loading = ModelLoadingOptions.AddTo(command, streaming: true);
        command.SetAction(parse => CliRunner.Run(() =>
        {
            var given = new GenerationConfig(Temperature: parse.GetValue(temperature), TopK: parse.GetValue(topK), TopP: parse.GetValue(topP),
                RepetitionPenalty: parse.GetValue(penalty), MaxNewTokens: parse.GetValue(maxNew), MinNewTokens: parse.GetValue(minNew))
                .Validated("generate"); // the file's range checks: unchecked, a negative --temperature turned sampling off
            SamplingOptions OptionsFor(string dir) =>
                GenerationConfig.Load(dir).OverriddenBy(given).ToSamplingOptions() with { StopStrings = parse.GetValue(stop), Seed = parse.GetValue(seed) };
            var ids = parse.GetValue(inputIds) is { } idsText ? CliRunner.ParseIds(idsText, "--input-ids") : null;
            var verse = parse.GetValue(form) is { Length: > 0 } formName ? VerseForm.Parse(formName) : null;
            var heads = parse.GetValue(acrostic) is { Length: > 0 } h ? h : null;
            var prompts = parse.GetValue(prompt) is { Length: > 0 } promptTexts ? promptTexts : [""];
            if (ids is not null && parse.GetValue(prompt) is { Length: > 0 })
                throw new TianGongException("generate: give --prompt or --input-ids, not both");
            if (parse.GetValue(onnx) is { } onnxDir)
            {
                if (parse.GetValue(model) is not null) throw new TianGongException("generate: give --model or --onnx, not both");
                if (ids is not null && (heads is not null || verse is not null))
                    throw new TianGongException("generate: --acrostic and --form need a decoder-only model and a --prompt");
                return OnnxGenerate.Run(onnxDir, prompts, ids, OptionsFor(onnxDir), verse, heads, maxNewGiven: parse.GetValue(maxNew) is not null);
            }
            using var loaded = loading.Load(parse, parse.GetValue(model) ?? throw new TianGongException("generate: give --model (or --onnx)"));
            var options = OptionsFor(loaded.Directory);
            if ((ids is not null || loaded.Module is Seq2SeqLM) && (heads is not null || verse is not null))
                throw new TianGongException("generate: --acrostic and --form need a decoder-only model and a --prompt");

            if (loaded.Module is Seq2SeqLM seq2seq)
            {
                // An encoder-decoder model: the prompt (or the ids) is the source; the output is a new sequence, not a continuation.
                var sources = ids is not null ? [ids] : prompts.Select(ModelOptions.RequireTokenizer(loaded, "--input-ids").Encode).ToList();
                var outputs = new Seq2SeqGenerator(seq2seq, loaded.Tokenizer).GenerateIds(sources, options);
                for (int i = 0; i < outputs.Count; i++)
                {
                    if (i > 0) Console.WriteLine();
                    PrintIdsResult(outputs[i], loaded.Tokenizer);
                }
                return 0;
            }
            if (ids is not null)
            {
                var continued = new TextGenerator(loaded.AsCausalLM("generate"), loaded.Tokenizer).GenerateIds([ids], options)[0];
                PrintIdsResult(continued, loaded.Tokenizer);
                return 0;
            }

            var lm = loaded.AsCausalLM("generate"); // before the tokenizer: an encoder folder's problem is not its tokenizer
            var tokenizer = ModelOptions.RequireTokenizer(loaded, "a folder with tokenizer.json, or --input-ids");
            var generator = new TextGenerator(lm, tokenizer);
            var texts = prompts.ToArray();
            (texts, options, var constraint) = ForPoem(tokenizer, texts, options, verse, heads, maxNewGiven: parse.GetValue(maxNew) is not null);
            // Several prompts share one batch (left-padded); each result is what its prompt gives alone.
            var results = generator.Generate(texts, options, constraint);
            for (int i = 0; i < results.Count; i++)
            {
                if (i > 0) Console.WriteLine();
                Console.WriteLine(texts[i] + results[i].Text);
                AnsiConsole.MarkupLineInterpolated($"[grey]({results[i].TokenIds.Length} tokens, finish: {results[i].FinishReason})[/]");
            }
            return 0;
        }));
        return command;
    }

    /// <summary>
    /// With --acrostic or --form: the constraint, and the prompts and options it needs. A poem follows its title line;
    /// without --max-new-tokens it gets room for its whole form.
    /// </summary>
    internal static (string[] Texts, SamplingOptions Options, ITokenConstraint? Constraint) ForPoem(Tokenizers.ITextTokenizer tokenizer,
        string[] texts, SamplingOptions options, VerseForm? verse, string? heads, bool maxNewGiven)
    {
        var constraint = PoemConstraint.Create(tokenizer, verse, heads);
        if (constraint is null) return (texts, options, null);
        texts = [.. texts.Select(t => t.EndsWith('\n') ? t : t + "\n")];
        if (verse is not null && !maxNewGiven)
            options = options with { MaxNewTokens = Math.Max(options.MaxNewTokens, PoemConstraint.TokenBudget(verse)) };
        return (texts, options, constraint);
    }

    // Generated ids as text when the folder has a tokenizer, else as comma-separated ids on one line.
    internal static void PrintIdsResult(GeneratedIds result, Tokenizers.ITextTokenizer? tokenizer)
    {
        Console.WriteLine(tokenizer is null ? string.Join(",", result.Generated) : tokenizer.Decode(result.Generated, skipSpecialTokens: true));
        AnsiConsole.MarkupLineInterpolated($"[grey]({result.Generated.Length} tokens, finish: {result.FinishReason})[/]");
    }
}
