using TianGong.Tokenizers;
using TianGong.Training;
using TianGong.Tuning;
using TianGong.Tuning.Data;
using TianGong.Tests.Training;

namespace TianGong.Tests.Tuning;

[Collection(nameof(GlobalRandomState))]
public class SftTests
{
    [Fact]
    public void Only_assistant_replies_and_their_end_markers_are_trained_in_a_hand_built_conversation()
    {
        var tokenizer = TuningFolders.Tokenizer();
        ChatMessage[] conversation =
        [
            new("system", "詩人"),
            new("user", "春眠"),
            new("assistant", "不覺曉"),
            new("user", "花落"),
            new("assistant", "知多少"),
        ];
        var tokens = ChatTokens.Build(conversation, ChatTemplate.Default, tokenizer);
        Assert.Equal(ChatTemplate.Default.Render(conversation, addGenerationPrompt: false), tokenizer.Decode(tokens.Ids));

        // The trained runs, decoded, are exactly the two replies with ChatML's end-of-turn marker.
        var runs = new List<string>();
        for (int i = 0; i < tokens.Ids.Length; i++)
        {
            if (!tokens.Trained[i]) continue;
            int start = i;
            while (i < tokens.Ids.Length && tokens.Trained[i]) i++;
            runs.Add(tokenizer.Decode(tokens.Ids[start..i]));
        }
        Assert.Equal(["不覺曉<|im_end|>\n", "知多少<|im_end|>\n"], runs);

        // In the batch, a target is the next id exactly where the next token is trained, and -100 elsewhere.
        var data = new MaskedExampleData([new MaskedExample(tokens.Ids, tokens.Trained, "hand-built")], [], 1, 512, 0, 1, CPU);
        using var batch = data.Batch([new MaskedExample(tokens.Ids, tokens.Trained, "hand-built")]);
        var target = batch.Target[0].data<long>().ToArray();
        var input = batch.Input[0].data<long>().ToArray();
        Assert.Equal(tokens.Ids[..^1].Select(x => (long)x), input);
        for (int i = 0; i < target.Length; i++)
            Assert.Equal(tokens.Trained[i + 1] ? tokens.Ids[i + 1] : MaskedExampleData.IgnoreIndex, target[i]);

        // The loss over the batch is the mean over trained targets only.
        using var logits = randn(1, target.Length, tokenizer.VocabSize);
        using var loss = LanguageModeling.Loss(logits, batch.Target);
        using var logp = logits[0].log_softmax(-1);
        double expected = -Enumerable.Range(0, target.Length).Where(i => target[i] >= 0).Average(i => logp[i, target[i]].item<float>());
        Assert.Equal(expected, loss.item<float>(), 4);
    }

    [Fact]
    public void Sft_with_lora_trains_on_chat_rows()
    {
        var modelDir = TuningFolders.Model();
        var path = Path.Combine(TestModels.TempDir(), "chat.jsonl");
        File.WriteAllLines(path, TuningFolders.Poems.Select(p =>
            new System.Text.Json.Nodes.JsonObject
            {
                ["messages"] = new System.Text.Json.Nodes.JsonArray(
                    new System.Text.Json.Nodes.JsonObject { ["role"] = "user", ["content"] = p[..5] },
                    new System.Text.Json.Nodes.JsonObject { ["role"] = "assistant", ["content"] = p[5..] }),
            }.ToJsonString()));
        var outDir = Path.Combine(TestModels.TempDir(), "sft");
        var options = TuningFolders.Options(modelDir, outDir, FinetuneMethod.Lora, path, FinetuneTask.Sft, steps: 10) with
        {
            Training = TuningFolders.Training(10) with { SeqLen = 64 },
        };
        var result = Finetuning.Run(options);
        var records = MetricsLog.Read(result.MetricsPath);
        Assert.True(records[^1].TrainLoss < records[0].TrainLoss, $"loss {records[0].TrainLoss} → {records[^1].TrainLoss}");
        Assert.NotNull(records[^1].ValLoss);
    }
}
