using System.CommandLine;
using Spectre.Console;
using TianGong.Checkpoints;
using TianGong.Inference;
using TianGong.Models;

namespace TianGong.Cli.Commands;

internal static class GenerateCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model folder (config.json, model.safetensors, tokenizer.json)", Required = true };
        var prompt = new Option<string>("--prompt") { Description = "Text to continue (with --acrostic: the title line)", DefaultValueFactory = _ => "" };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Most tokens to generate", DefaultValueFactory = _ => 96 };
        var minNew = new Option<int>("--min-new-tokens") { Description = "End-of-text is not allowed before this many tokens", DefaultValueFactory = _ => 0 };
        var temperature = new Option<double>("--temperature") { Description = "Sampling temperature; 0 is greedy decoding", DefaultValueFactory = _ => 0.8 };
        var topK = new Option<int>("--top-k") { Description = "Sample among the k most likely tokens (0: off)", DefaultValueFactory = _ => 40 };
        var topP = new Option<double>("--top-p") { Description = "Nucleus sampling mass (1: off)", DefaultValueFactory = _ => 0.95 };
        var penalty = new Option<double>("--repetition-penalty") { Description = "Penalty for tokens already present (1: off)", DefaultValueFactory = _ => 1.1 };
        var seed = new Option<long?>("--seed") { Description = "Random seed (same seed, same output)" };
        var stop = new Option<string[]>("--stop") { Description = "Stop when this text is generated (repeatable)", AllowMultipleArgumentsPerToken = false };
        var acrostic = new Option<string?>("--acrostic") { Description = "藏头诗: line i starts with the i-th of these characters" };
        var inputIds = new Option<string?>("--input-ids") { Description = "Token ids instead of --prompt, comma-separated (for folders without tokenizer.json)" };
        var command = new Command("generate", "Generate text with a model (decoder-only or encoder-decoder)") { model, prompt, maxNew, minNew, temperature, topK, topP, penalty, seed, stop, acrostic, inputIds };
        var device = ModelOptions.DeviceOption();
        command.Options.Add(device);
        var adapter = ModelOptions.AdapterOption(command);
        command.SetAction(parse => CliRunner.Run(() =>
        {
            using var loaded = ModelOptions.Load(parse.GetValue(model)!, parse.GetValue(device), parse.GetValue(adapter));
            var options = new SamplingOptions(parse.GetValue(maxNew), parse.GetValue(temperature), parse.GetValue(topK), parse.GetValue(topP),
                parse.GetValue(penalty), parse.GetValue(stop), parse.GetValue(seed), MinNewTokens: parse.GetValue(minNew));
            var ids = parse.GetValue(inputIds) is { } idsText ? CliRunner.ParseIds(idsText, "--input-ids") : null;
            if (ids is not null && parse.GetValue(prompt) is { Length: > 0 })
                throw new TianGongException("generate: give --prompt or --input-ids, not both");
            if ((ids is not null || loaded.Module is Seq2SeqLM) && parse.GetValue(acrostic) is { Length: > 0 })
                throw new TianGongException("generate: --acrostic needs a decoder-only model and a --prompt");

            if (loaded.Module is Seq2SeqLM seq2seq)
            {
                // An encoder-decoder model: the prompt (or the ids) is the source; the output is a new sequence, not a continuation.
                var source = ids ?? ModelOptions.RequireTokenizer(loaded, "--input-ids").Encode(parse.GetValue(prompt)!);
                var s2s = new Seq2SeqGenerator(seq2seq, loaded.Tokenizer).GenerateIds([source], options)[0];
                PrintIdsResult(s2s, loaded.Tokenizer);
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
            var text = parse.GetValue(prompt)!;
            GenerationResult result;
            if (parse.GetValue(acrostic) is { Length: > 0 } heads)
            {
                if (!text.EndsWith('\n')) text += "\n";
                result = generator.Generate(text, options, new AcrosticConstraint(tokenizer, heads));
            }
            else
            {
                result = generator.Generate(text, options);
            }
            Console.WriteLine(text + result.Text);
            AnsiConsole.MarkupLineInterpolated($"[grey]({result.TokenIds.Length} tokens, finish: {result.FinishReason})[/]");
            return 0;
        }));
        return command;
    }

    // Generated ids as text when the folder has a tokenizer, else as comma-separated ids on one line.
    private static void PrintIdsResult(TextGenerator.IdsResult result, Tokenizers.ITextTokenizer? tokenizer)
    {
        Console.WriteLine(tokenizer is null ? string.Join(",", result.Generated) : tokenizer.Decode(result.Generated, skipSpecialTokens: true));
        AnsiConsole.MarkupLineInterpolated($"[grey]({result.Generated.Length} tokens, finish: {result.FinishReason})[/]");
    }
}
