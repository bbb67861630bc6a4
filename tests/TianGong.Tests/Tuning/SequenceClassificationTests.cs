using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Tuning;
using TianGong.Tuning.Data;
using TianGong.Tests.Training;

namespace TianGong.Tests.Tuning;

[Collection(nameof(GlobalRandomState))]
public class SequenceClassificationTests
{
    [Theory]
    [MemberData(nameof(TestModels.BothFamilies), MemberType = typeof(TestModels))]
    public void Left_and_right_padding_give_each_row_the_logits_it_has_alone(string family)
    {
        using var model = TestModels.Create(family);
        var classifier = new SequenceClassifier(model, 3);
        classifier.eval();
        long[][] rows = [[5, 9, 2, 7, 1], [3, 8], [4, 4, 6]];
        using var _ = no_grad();
        var alone = rows.Select(r => classifier.Classify(tensor(r).unsqueeze(0), ones(1, r.Length, ScalarType.Int64))).ToList();   // (1, 3) each
        // Transformers pools the last non-pad token; alone, that is the last token's score of forward().
        Assert.True((alone[0] - classifier.forward(tensor(rows[0]).unsqueeze(0))[0, -1]).abs().max().item<float>() < 1e-6);
        foreach (bool left in new[] { true, false })
        {
            int t = rows.Max(r => r.Length);
            long[] Pad(long[] r, long fill) => left ? [.. Enumerable.Repeat(fill, t - r.Length), .. r] : [.. r, .. Enumerable.Repeat(fill, t - r.Length)];
            using var ids = tensor(rows.SelectMany(r => Pad(r, 0)).ToArray(), [rows.Length, t]);
            using var mask = tensor(rows.SelectMany(r => Pad(r.Select(_ => 1L).ToArray(), 0)).ToArray(), [rows.Length, t]);
            using var batched = classifier.Classify(ids, mask);
            for (int i = 0; i < rows.Length; i++)
                Assert.True((batched[i] - alone[i][0]).abs().max().item<float>() < 1e-5, $"{family} {(left ? "left" : "right")} padding, row {i}");
        }
    }

    [Fact]
    public void Full_finetuning_with_a_score_head_learns_a_separable_task_and_eval_reads_the_head_back()
    {
        var modelDir = TuningFolders.Model("llama");
        var dataDir = TestModels.TempDir();
        var random = new Random(11);
        string Row(string label) =>
            new JsonObject { ["text"] = string.Concat(Enumerable.Range(0, random.Next(3, 9)).Select(_ => (label == "spring" ? "春花風雨" : "月霜江雪")[random.Next(4)])), ["label"] = label }.ToJsonString();
        File.WriteAllLines(Path.Combine(dataDir, "train.jsonl"), Enumerable.Range(0, 40).Select(i => Row(i % 2 == 0 ? "spring" : "moon")));
        File.WriteAllLines(Path.Combine(dataDir, "test.jsonl"), Enumerable.Range(0, 30).Select(i => Row(i % 3 == 0 ? "spring" : "moon")));
        var outDir = Path.Combine(TestModels.TempDir(), "head");
        var result = Finetuning.Run(TuningFolders.Options(modelDir, outDir, FinetuneMethod.Full, Path.Combine(dataDir, "train.jsonl"), FinetuneTask.Classify, steps: 30) with
        {
            Training = TuningFolders.Training(30, lr: 3e-3),
            Classify = new ClassifyOptions("{text}{mask}", new Dictionary<string, string>()),
            ClassificationHead = true,
        });
        Assert.Equal(result.Parameters, result.TrainableParameters);

        using var loaded = ModelFolder.Load(outDir);
        var (classifier, labels) = SequenceClassification.Load(loaded) ?? throw new Xunit.Sdk.XunitException("no head in the folder");
        Assert.Equal(["moon", "spring"], labels);                         // no verbalizer: the training labels, sorted
        var test = LabeledRows.Read(Path.Combine(dataDir, "test.jsonl"));
        var predicted = SequenceClassification.Predict(classifier, loaded.Tokenizer!, labels, test.Select(r => r.Text), 64);
        var scores = ClassificationScores.Of(test.Select(r => r.Label).ToList(), predicted, labels);
        Assert.True(scores.Accuracy >= 0.9, $"accuracy {scores.Accuracy}");

        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, ModelFolder.ConfigFile)))!;
        Assert.Equal("spring", config["id2label"]!["1"]!.GetValue<string>());
        Assert.Equal(0, config["label2id"]!["moon"]!.GetValue<int>());
    }

    [Fact]
    public void The_head_needs_full_finetuning_of_a_classify_task()
    {
        var options = TuningFolders.Options(TestModels.TempDir(), TestModels.TempDir(), FinetuneMethod.Lora, "x.jsonl", FinetuneTask.Classify) with { ClassificationHead = true };
        var e = Assert.Throws<TianGongException>(() => Finetuning.Run(options));
        Assert.Contains("--classification-head", e.Message);
    }
}
