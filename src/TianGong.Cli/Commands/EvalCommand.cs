using System.CommandLine;
using System.Text.Json.Nodes;
using Spectre.Console;
using TianGong.Tuning;
using TianGong.Tuning.Data;

namespace TianGong.Cli.Commands;

/// <summary><c>tiangong eval</c>: perplexity on text (lm) or prompt-based accuracy and macro-F1 on labeled rows (classify), for a model with or without an adapter.</summary>
internal static class EvalCommand
{
    public static Option<string> TemplateOption() =>
        new("--template") { Description = "classify: the prompt, with {text} and ending in {mask} (the label word)", DefaultValueFactory = _ => "{text}\n類別：{mask}" };

    public static Option<string?> VerbalizerOption() =>
        new("--verbalizer") { Description = "classify: label=word pairs (spam=垃,ham=正); each word one token" };

    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model folder", Required = true };
        var task = new Option<string>("--task") { Description = "lm: perplexity; classify: accuracy and macro-F1", DefaultValueFactory = _ => "lm" };
        task.AcceptOnlyFromAmong("lm", "classify");
        var data = new Option<string>("--data") { Description = "lm: text/JSONL file or chinese-poetry; classify: JSONL {\"text\",\"label\"}, or a task: spam, poetry-tang-ci (its test split)", Required = true };
        var json = new Option<bool>("--json") { Description = "Print the result as one JSON object" };
        var seqLen = new Option<int>("--seq-len") { Description = "lm: tokens per scored window", DefaultValueFactory = _ => 256 };
        var template = TemplateOption();
        var verbalizer = VerbalizerOption();
        var shots = new Option<int>("--shots") { Description = "classify: demonstrations per label put before each query (k-shot in context; 0: zero-shot)", DefaultValueFactory = _ => 0 };
        var trainData = new Option<string?>("--train-data") { Description = "classify: rows the demonstrations are drawn from" };
        var probe = new Option<bool>("--probe") { Description = "classify: the linear-probe baseline instead of the prompt: a softmax regression on mean-pooled hidden states, fitted on --shots rows per label of --train-data" };
        var seed = new Option<long>("--seed") { Description = "classify: seed of the demonstration draw", DefaultValueFactory = _ => 1 };
        var command = new Command("eval", "Perplexity (lm) or classification accuracy and macro-F1 (classify: prompt-based, or the folder's classification head when it has one)") { model, task, data, json, seqLen, template, verbalizer, shots, trainData, probe, seed };
        var loading = ModelLoadingOptions.AddTo(command);
        command.SetAction(parse => CliRunner.Run(() =>
        {
            using var loaded = loading.Load(parse, parse.GetValue(model)!);
            var dataPath = parse.GetValue(data)!;
            var demonstrationsPath = parse.GetValue(trainData);
            if (TaskSets.IsTask(dataPath))
            {
                // A named task: scored on its held-out test split; demonstrations come from its training split.
                var files = TaskSets.Ensure(dataPath, TianGong.Data.DatasetLocations.Home(), m => Console.Error.WriteLine(m));
                (dataPath, demonstrationsPath) = (files.Test, demonstrationsPath ?? files.Train);
            }
            var lm = loaded.AsCausalLM("eval");
            var tokenizer = ModelOptions.RequireTokenizer(loaded, "a folder with a tokenizer");
            JsonObject result;
            if (parse.GetValue(task) == "lm")
            {
                var r = Evaluation.Perplexity(lm, tokenizer, Evaluation.Documents(dataPath), parse.GetValue(seqLen));
                result = new JsonObject { ["task"] = "lm", ["documents"] = r.Documents, ["tokens"] = r.Tokens, ["loss"] = r.MeanLoss, ["perplexity"] = r.Perplexity };
            }
            else if (SequenceClassification.Load(loaded) is { } head)
            {
                // A folder fine-tuned with --classification-head: its score head decides, no template or verbalizer.
                var rows = LabeledRows.Read(dataPath);
                var predicted = SequenceClassification.Predict(head.Classifier, tokenizer, head.Labels, rows.Select(r => r.Text), 200);
                var scores = ClassificationScores.Of(rows.Select(r => r.Label).ToList(), predicted, head.Labels);
                result = ClassifyResult("classification-head", scores, 0);
            }
            else
            {
                var words = parse.GetValue(verbalizer) ?? throw new TianGongException("eval --task classify: give --verbalizer label=word,...");
                var classifier = new PromptClassifier(parse.GetValue(template)!, PromptClassifier.ParseVerbalizer(words), tokenizer) { MaxTextTokens = 200 };
                var rows = LabeledRows.Read(dataPath);
                foreach (var row in rows) classifier.LabelIndex(row.Label, $"{dataPath}:{row.Line}: field 'label'");
                int k = parse.GetValue(shots);
                IReadOnlyList<LabeledRow>? demonstrations = null;
                if (k > 0)
                {
                    var source = demonstrationsPath ?? throw new TianGongException("--shots: give --train-data to draw the demonstrations from");
                    demonstrations = LabeledRows.SampleShots(LabeledRows.Read(source), k, parse.GetValue(seed));
                }
                IReadOnlyList<string> predicted;
                if (parse.GetValue(probe))
                {
                    if (demonstrations is null) throw new TianGongException("--probe: give --shots K (and --train-data, or a task) to fit the probe on");
                    using var trainX = LinearProbe.Features(lm, tokenizer, demonstrations.Select(d => d.Text), 200);
                    using var testX = LinearProbe.Features(lm, tokenizer, rows.Select(r => r.Text), 200);
                    var classes = LinearProbe.FitAndPredict(trainX, demonstrations.Select(d => classifier.LabelIndex(d.Label, $"line {d.Line}")).ToArray(), testX, classifier.Labels.Count);
                    predicted = classes.Select(c => classifier.Labels[c]).ToList();
                }
                else predicted = classifier.Predict(lm, rows.Select(r => r.Text), demonstrations);
                var scores = ClassificationScores.Of(rows.Select(r => r.Label).ToList(), predicted, classifier.Labels);
                result = ClassifyResult(parse.GetValue(probe) ? "linear-probe" : "prompt", scores, k);
            }
            if (parse.GetValue(json)) Console.WriteLine(result.ToJsonString());
            else if (result["task"]!.GetValue<string>() == "lm")
                AnsiConsole.MarkupLineInterpolated($"perplexity [bold]{result["perplexity"]!.GetValue<double>():F3}[/] (loss {result["loss"]!.GetValue<double>():F4}) over {result["tokens"]} tokens of {result["documents"]} documents");
            else
                AnsiConsole.MarkupLineInterpolated($"accuracy [bold]{result["accuracy"]!.GetValue<double>():P1}[/], macro-F1 [bold]{result["macro_f1"]!.GetValue<double>():F3}[/] over {result["examples"]} examples ({result["shots"]}-shot)");
            return 0;
        }));
        return command;
    }

    private static JsonObject ClassifyResult(string method, ClassificationScores scores, int shots) => new()
    {
        ["task"] = "classify", ["method"] = method, ["examples"] = scores.Examples, ["shots"] = shots, ["accuracy"] = scores.Accuracy, ["macro_f1"] = scores.MacroF1,
        ["f1"] = new JsonObject(scores.F1ByLabel.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))),
    };
}
