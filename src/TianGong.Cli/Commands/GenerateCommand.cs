using System.CommandLine;
using Spectre.Console;
using TianGong.Checkpoints;
using TianGong.Inference;

namespace TianGong.Cli.Commands;

internal static class GenerateCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model folder (config.json, model.safetensors, tokenizer.json)", Required = true };
        var prompt = new Option<string>("--prompt") { Description = "Text to continue (with --acrostic: the title line)", DefaultValueFactory = _ => "" };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Most tokens to generate", DefaultValueFactory = _ => 96 };
        var temperature = new Option<double>("--temperature") { Description = "Sampling temperature; 0 is greedy decoding", DefaultValueFactory = _ => 0.8 };
        var topK = new Option<int>("--top-k") { Description = "Sample among the k most likely tokens (0: off)", DefaultValueFactory = _ => 40 };
        var topP = new Option<double>("--top-p") { Description = "Nucleus sampling mass (1: off)", DefaultValueFactory = _ => 0.95 };
        var penalty = new Option<double>("--repetition-penalty") { Description = "Penalty for tokens already present (1: off)", DefaultValueFactory = _ => 1.1 };
        var seed = new Option<long?>("--seed") { Description = "Random seed (same seed, same output)" };
        var stop = new Option<string[]>("--stop") { Description = "Stop when this text is generated (repeatable)", AllowMultipleArgumentsPerToken = false };
        var acrostic = new Option<string?>("--acrostic") { Description = "藏头诗: line i starts with the i-th of these characters" };
        var command = new Command("generate", "Generate text with a model") { model, prompt, maxNew, temperature, topK, topP, penalty, seed, stop, acrostic };
        command.SetAction(parse => CliRunner.Run(() =>
        {
            using var loaded = ModelFolder.Load(parse.GetValue(model)!);
            var lm = loaded.AsCausalLM("generate"); // before the tokenizer: an encoder folder's problem is not its tokenizer
            var tokenizer = ModelOptions.RequireTokenizer(loaded, "a folder with tokenizer.json");
            var options = new SamplingOptions(parse.GetValue(maxNew), parse.GetValue(temperature), parse.GetValue(topK), parse.GetValue(topP),
                parse.GetValue(penalty), parse.GetValue(stop), parse.GetValue(seed));
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
}
