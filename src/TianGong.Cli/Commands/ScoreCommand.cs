using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using Spectre.Console;
using TianGong.Checkpoints;
using TianGong.Inference;

namespace TianGong.Cli.Commands;

internal static class ScoreCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model folder", Required = true };
        var text = new Option<string?>("--text") { Description = "Text to score (tokenized with the folder's tokenizer)" };
        var ids = new Option<string?>("--ids") { Description = "Token ids to score, comma-separated" };
        var json = new Option<bool>("--json") { Description = "Print {\"ids\":[...],\"logprobs\":[...],\"perplexity\":x} (the ids scored, special tokens included)" };
        var noSpecial = new Option<bool>("--no-special") { Description = "Do not add the tokenizer's special tokens (bos...) to --text, as add_special_tokens=False" };
        var command = new Command("score", "Per-token log-probabilities and perplexity of a text, encoded as transformers' tokenizer(text) does") { model, text, ids, json, noSpecial };
        var loading = ModelLoadingOptions.AddTo(command, streaming: true);
        command.SetAction(parse => CliRunner.Run(() =>
        {
            var (textValue, idsValue) = (parse.GetValue(text), parse.GetValue(ids));
            if ((textValue is null) == (idsValue is null)) throw new TianGongException("score: give exactly one of --text or --ids");
            using var loaded = loading.Load(parse, parse.GetValue(model)!);
            var tokenIds = idsValue is not null
                ? CliRunner.ParseIds(idsValue, "--ids")
                : ModelOptions.RequireTokenizer(loaded, "--ids").Encode(textValue!, addSpecialTokens: !parse.GetValue(noSpecial));
            var result = Scorer.Score(loaded.AsCausalLM("score"), tokenIds);
            if (parse.GetValue(json))
            {
                var output = new JsonObject
                {
                    ["ids"] = new JsonArray(result.Ids.Select(i => (JsonNode)i).ToArray()),
                    ["logprobs"] = new JsonArray(result.LogProbs.Select(l => (JsonNode)l).ToArray()),
                    ["perplexity"] = result.Perplexity,
                };
                Console.WriteLine(output.ToJsonString());
                return 0;
            }
            var table = new Table().AddColumns("position", "token id", "token", "log P(token | before)");
            var tokenizer = loaded.Tokenizer;
            for (int i = 1; i < result.Ids.Length; i++)
                table.AddRow(i.ToString(), result.Ids[i].ToString(), Markup.Escape(tokenizer?.Decode([result.Ids[i]]) ?? ""),
                    result.LogProbs[i - 1].ToString("F4", CultureInfo.InvariantCulture));
            AnsiConsole.Write(table);
            AnsiConsole.MarkupLineInterpolated($"perplexity: [bold]{result.Perplexity:F3}[/] over {result.Ids.Length - 1} predicted tokens");
            return 0;
        }));
        return command;
    }
}
