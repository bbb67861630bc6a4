using System.Text.Json.Nodes;
using TianGong.Tuning.Data;

namespace TianGong.Tests.Tuning;

public class TaskSetsTests
{
    [Fact]
    public void An_email_keeps_its_subject_and_body_and_drops_its_headers()
    {
        var text = TaskSets.EmailText("From a@b.c  Thu Aug 22\r\nReceived: x\r\nSubject: Cheap   pills\r\nTo: d@e.f\r\n\r\nBuy now!\r\n\r\nReally.");
        Assert.Equal("Subject: Cheap pills Buy now! Really.", text);
    }

    [Fact]
    public void The_spam_task_splits_a_fixed_fifth_for_test_and_labels_by_folder()
    {
        var home = TestModels.TempDir();
        var data = Path.Combine(home, "datasets", "spam-assassin", "data");
        foreach (var (group, count) in new[] { ("easy-ham-1", 30), ("spam-1", 20) })
        {
            Directory.CreateDirectory(Path.Combine(data, group));
            for (int i = 0; i < count; i++)
                File.WriteAllText(Path.Combine(data, group, $"{i:D5}.json"),
                    new JsonObject { ["group"] = group, ["text"] = $"Received: x\nSubject: {group} {i}\n\nbody {i}" }.ToJsonString());
        }
        var files = TaskSets.Ensure(TaskSets.Spam, home);
        var train = LabeledRows.Read(files.Train);
        var test = LabeledRows.Read(files.Test);
        Assert.Equal(50, train.Count + test.Count);
        Assert.InRange(test.Count, 3, 20);
        Assert.Empty(train.Select(r => r.Text).Intersect(test.Select(r => r.Text)));
        Assert.All(train.Concat(test), r => Assert.Equal(r.Text.Contains("spam-1") ? "spam" : "ham", r.Label));
        Assert.All(train.Concat(test), r => Assert.DoesNotContain("Received", r.Text));
        var unlabeled = File.ReadAllLines(files.Unlabeled).Select(l => JsonNode.Parse(l)!).ToList();
        Assert.Equal(train.Select(r => r.Text), unlabeled.Select(n => n["text"]!.GetValue<string>()));
        Assert.All(unlabeled, n => Assert.Null(n["label"]));

        // Built again elsewhere from the same data: the same split.
        var again = TestModels.TempDir();
        Directory.CreateDirectory(Path.Combine(again, "datasets"));
        Directory.CreateSymbolicLink(Path.Combine(again, "datasets", "spam-assassin"), Path.Combine(home, "datasets", "spam-assassin"));
        Assert.Equal(File.ReadAllText(files.Test), File.ReadAllText(TaskSets.Ensure(TaskSets.Spam, again).Test));
    }
}
