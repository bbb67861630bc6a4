using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Tests.Cli;
using TianGong.Tests.Training;
using TianGong.Training;
using TianGong.Tuning;
using TianGong.Tuning.Data;

namespace TianGong.Tests.Tuning;

[Collection(nameof(GlobalRandomState))]
public class ClassifyTests
{
    private static readonly Dictionary<string, string> Verbalizer = new() { ["spring"] = "春", ["moon"] = "月" };

    [Fact]
    public void The_label_is_the_verbalizer_word_the_lm_finds_most_likely_after_the_prompt()
    {
        var tokenizer = TuningFolders.Tokenizer();
        using var model = TestModels.Create("llama", vocab: tokenizer.VocabSize);
        model.eval();
        var classifier = new PromptClassifier("{text}：{mask}", Verbalizer, tokenizer);
        Assert.Equal("白日依山盡：", classifier.Prompt("白日依山盡"));
        var scores = classifier.Score(model, ["白日依山盡", "床前明月光"]);

        using var _ = no_grad();
        for (int row = 0; row < 2; row++)
        {
            var ids = tokenizer.Encode(classifier.Prompt(new[] { "白日依山盡", "床前明月光" }[row]));
            using var logits = model.forward(tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0));
            var last = logits[0, -1];
            float spring = last[classifier.WordIds[0]].item<float>(), moon = last[classifier.WordIds[1]].item<float>();
            Assert.Equal(spring - moon, scores[row][0] - scores[row][1], 4);                         // renormalised over the two words
            Assert.Equal(1.0, scores[row].Sum(s => Math.Exp(s)), 4);
        }
        var predicted = classifier.Predict(model, ["白日依山盡"]);
        Assert.Equal(scores[0][0] > scores[0][1] ? "spring" : "moon", predicted[0]);

        // Demonstrations come before the query, each filled with its label's word.
        Assert.Equal("春眠：春\n\n白日：", classifier.Prompt("白日", [new LabeledRow(1, "春眠", "spring")]));
    }

    [Fact]
    public void A_verbalizer_word_of_several_tokens_is_refused_by_name()
    {
        var e = Assert.Throws<TianGongException>(() =>
            new PromptClassifier("{text}{mask}", new Dictionary<string, string> { ["a"] = "春", ["b"] = "天地" }, TuningFolders.Tokenizer()));
        Assert.Contains("the word '天地' for label 'b' is ", e.Message);
        Assert.Throws<TianGongException>(() => new PromptClassifier("{mask}{text}", Verbalizer, TuningFolders.Tokenizer()));
    }

    [Fact]
    public void Accuracy_and_macro_f1_are_computed_per_label()
    {
        var s = ClassificationScores.Of(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"]);
        Assert.Equal(0.75, s.Accuracy);
        Assert.Equal(2.0 / 3, s.F1ByLabel["a"], 10);
        Assert.Equal(0.8, s.F1ByLabel["b"], 10);
        Assert.Equal((2.0 / 3 + 0.8) / 2, s.MacroF1, 10);
    }

    [Fact]
    public void K_shot_draws_are_fixed_by_the_seed_and_balanced()
    {
        var rows = Enumerable.Range(0, 40).Select(i => new LabeledRow(i + 1, $"t{i}", i % 2 == 0 ? "x" : "y")).ToList();
        var a = LabeledRows.SampleShots(rows, 8, seed: 5);
        Assert.Equal(a, LabeledRows.SampleShots(rows, 8, seed: 5));
        Assert.NotEqual(a, LabeledRows.SampleShots(rows, 8, seed: 6));
        Assert.Equal(8, a.Count(r => r.Label == "x"));
        Assert.Equal(8, a.Count(r => r.Label == "y"));
    }

    [Fact]
    [Trait("Category", "Slow")]
    public void Finetune_classify_then_eval_through_the_cli()
    {
        var modelDir = TuningFolders.Model();
        var dir = TestModels.TempDir();
        var data = Path.Combine(dir, "train.jsonl");
        // Label: does the line come from the first two poems (spring) or the last two (moon)?
        File.WriteAllLines(data, Enumerable.Range(0, 40).Select(i =>
        {
            var poem = TuningFolders.Poems[i % 4];
            return new JsonObject { ["text"] = poem[..5], ["label"] = i % 4 < 2 ? "spring" : "moon" }.ToJsonString();
        }));
        File.AppendAllText(data, "{\"text\":\"x\"}\n");
        var home = TestModels.TempDir();
        var bad = CliProcess.Run(home, "finetune", "--model", modelDir, "--task", "classify", "--data", data, "--out", Path.Combine(dir, "bad"),
            "--template", "{text}：{mask}", "--verbalizer", "spring=春,moon=月");
        Assert.Equal(1, bad.ExitCode);
        Assert.Contains($"{data}:41: field 'label': missing", bad.Stderr);

        File.WriteAllLines(data, File.ReadAllLines(data)[..^1]);
        var outDir = Path.Combine(dir, "full");
        var run = CliProcess.Run(home, "finetune", "--model", modelDir, "--task", "classify", "--data", data, "--out", outDir,
            "--template", "{text}：{mask}", "--verbalizer", "spring=春,moon=月", "--method", "full", "--max-steps", "30", "--lr", "0.01", "--batch-size", "8", "--shots", "8");
        Assert.True(run.ExitCode == 0, run.All);
        var records = MetricsLog.Read(Path.Combine(outDir, MetricsLog.FileName));
        Assert.True(records[^1].TrainLoss < records[0].TrainLoss / 2, $"loss {records[0].TrainLoss} → {records[^1].TrainLoss}");

        var eval = CliProcess.Run(home, "eval", "--model", outDir, "--task", "classify", "--data", data,
            "--template", "{text}：{mask}", "--verbalizer", "spring=春,moon=月", "--json");
        Assert.True(eval.ExitCode == 0, eval.All);
        var json = JsonNode.Parse(eval.Stdout)!;
        Assert.Equal(40, json["examples"]!.GetValue<int>());
        Assert.Equal(1.0, json["accuracy"]!.GetValue<double>());

        var ppl = CliProcess.Run(home, "eval", "--model", modelDir, "--task", "lm", "--data", TuningFolders.TextFile(), "--json");
        Assert.True(ppl.ExitCode == 0, ppl.All);
        Assert.InRange(JsonNode.Parse(ppl.Stdout)!["perplexity"]!.GetValue<double>(), 1, 1000);
    }

    [Fact]
    public void Perplexity_is_the_exponential_of_the_mean_next_token_loss()
    {
        var tokenizer = TuningFolders.Tokenizer();
        using var model = TestModels.Create("gpt2", vocab: tokenizer.VocabSize);
        model.eval();
        var doc = TuningFolders.Poems[0];
        var r = Evaluation.Perplexity(model, tokenizer, [doc], 8);
        var ids = tokenizer.Encode(doc).Append(tokenizer.EosId).Select(i => (long)i).ToArray();
        if (tokenizer.BosId >= 0) ids = ids.Prepend(tokenizer.BosId).ToArray();
        Assert.Equal(ids.Length - 1, r.Tokens);
        using var _ = no_grad();
        double sum = 0;
        for (int s = 0; s + 1 < ids.Length; s += 8)
        {
            var piece = ids.Skip(s).Take(9).ToArray();
            using var logits = model.forward(tensor(piece[..^1]).unsqueeze(0));
            using var logp = logits[0].log_softmax(-1);
            for (int i = 0; i + 1 < piece.Length; i++) sum -= logp[i, piece[i + 1]].item<float>();
        }
        Assert.Equal(sum / r.Tokens, r.MeanLoss, 4);
        Assert.Equal(Math.Exp(r.MeanLoss), r.Perplexity, 6);
    }
}

[Collection(nameof(GlobalRandomState))]
public class LinearProbeTests
{
    [Fact]
    public void The_probe_separates_separable_features_and_pools_hidden_states_by_mean()
    {
        manual_seed(7);
        using var centers = randn(3, 16) * 3;
        var labels = Enumerable.Range(0, 60).Select(i => i % 3).ToArray();
        using var noise = randn(60, 16) * 0.3;
        using var x = centers.index_select(0, tensor(labels.Select(l => (long)l).ToArray())) + noise;
        var predicted = LinearProbe.FitAndPredict(x.narrow(0, 0, 30), labels[..30], x.narrow(0, 30, 30), 3);
        Assert.Equal(labels[30..], predicted);

        var tokenizer = TuningFolders.Tokenizer();
        using var model = TestModels.Create("llama", vocab: tokenizer.VocabSize);
        model.eval();
        using var features = LinearProbe.Features(model, tokenizer, ["春眠不覺曉", "床前"], 200);
        using var _ = no_grad();
        using var hidden = model.Hidden(tensor(tokenizer.Encode("床前").Select(i => (long)i).ToArray()).unsqueeze(0));
        Assert.True((features[1] - hidden[0].mean([0])).abs().max().item<float>() < 1e-6);
    }
}
