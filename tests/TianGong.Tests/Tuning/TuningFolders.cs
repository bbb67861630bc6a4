using TianGong.Checkpoints;
using TianGong.Tokenizers;
using TianGong.Training;
using TianGong.Tuning;

namespace TianGong.Tests.Tuning;

/// <summary>A tiny pretrained-looking model folder (random weights, a BPE tokenizer) and small data files for fine-tuning tests.</summary>
internal static class TuningFolders
{
    public static readonly string[] Poems =
    [
        "春眠不覺曉，處處聞啼鳥。\n夜來風雨聲，花落知多少。",
        "床前明月光，疑是地上霜。\n舉頭望明月，低頭思故鄉。",
        "白日依山盡，黃河入海流。\n欲窮千里目，更上一層樓。",
        "千山鳥飛絕，萬徑人蹤滅。\n孤舟蓑笠翁，獨釣寒江雪。",
    ];

    public static ByteLevelBpeTokenizer Tokenizer() =>
        ByteLevelBpeTrainer.Train(Enumerable.Repeat(Poems, 20).SelectMany(p => p).Append(string.Concat(Enumerable.Repeat("春。月。", 100))),
            new BpeTrainerOptions(VocabSize: 400, MinFrequency: 2)); // 春 and 月 alone often enough to be one token each (verbalizer words)

    /// <summary>A model folder of <paramref name="family"/> with a tokenizer; returns its path.</summary>
    public static string Model(string family = "llama")
    {
        var tokenizer = Tokenizer();
        var dir = TestModels.TempDir();
        using var model = TestModels.Create(family, vocab: tokenizer.VocabSize);
        var config = TestModels.Config(family, tokenizer.VocabSize).WithTokenizer(tokenizer.VocabSize, tokenizer.BosId, tokenizer.EosId);
        ModelFolder.Save(dir, model, config, tokenizer);
        return dir;
    }

    /// <summary>A plain-text corpus: the poems repeated, one document each, blank lines between.</summary>
    public static string TextFile()
    {
        var path = Path.Combine(TestModels.TempDir(), "poems.txt");
        File.WriteAllText(path, string.Join("\n\n", Enumerable.Repeat(Poems, 60).SelectMany(p => p)));
        return path;
    }

    public static TrainingSection Training(int steps = 6, double lr = 1e-2) => new(SeqLen: 16, BatchSize: 4, MaxSteps: steps, LearningRate: lr,
        MinLearningRate: lr / 10, WarmupSteps: 1, WeightDecay: 0, EvalInterval: steps, EvalBatches: 2, LogInterval: 1, CheckpointInterval: steps, Seed: 3, Threads: 1);

    public static FinetuneOptions Options(string model, string outDir, FinetuneMethod method, string data, FinetuneTask task = FinetuneTask.Lm, int steps = 6) =>
        new(model, outDir, method, task, data, Training(steps),
            Lora: new LoraConfig(4, 8, TianGong.Models.Layers.LayerSelector.Parse("q_proj,v_proj")),
            Unfreeze: new UnfreezeOptions(1, 3),
            Prompt: new PromptTuningConfig(4, "TEXT", "春眠"),
            Home: TestModels.TempDir());
}
