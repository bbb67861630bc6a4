using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using TianGong.Training;

namespace TianGong.Tests.Training;

[Collection(nameof(GlobalRandomState))]
public class GenericTrainerTests
{
    /// <summary>Fixed random token batches: a batch source that is not pretraining's.</summary>
    private sealed class FixedBatches : ITrainingData<TokenBatch>
    {
        private readonly Tensor data = randint(0, 64, [4, 9], dtype: ScalarType.Int64);

        public TokenBatch TrainBatch(long index) => new(data[.., ..8].clone(), data[.., 1..].clone());

        public IEnumerable<TokenBatch> ValidationBatches() => [TrainBatch(0)];
    }

    private static TrainingSection Settings(int steps) => new(SeqLen: 8, BatchSize: 4, MaxSteps: steps, LearningRate: 1e-2, MinLearningRate: 1e-3,
        WarmupSteps: 1, EvalInterval: 5, LogInterval: 1, CheckpointInterval: 100, Seed: 5);

    [Fact]
    public void Frozen_parameters_stay_put_metrics_are_logged_and_the_sync_hook_sees_every_gradient()
    {
        var dir = TestModels.TempDir();
        using var model = TestModels.Create("llama");
        var embedding = model.named_parameters().Single(p => p.name == "model.embed_tokens.weight").parameter;
        embedding.requires_grad = false;
        var before = embedding.detach().clone();
        var someMatrix = model.named_parameters().First(p => p.name.EndsWith("q_proj.weight")).parameter;
        var matrixBefore = someMatrix.detach().clone();

        int syncs = 0;
        var parallel = new ParallelContext(CPU, SyncGradients: trained =>
        {
            syncs++;
            Assert.All(trained, p => Assert.NotNull(p.grad)); // after backward, before the step
            Assert.DoesNotContain(trained, p => ReferenceEquals(p, embedding));
        });
        LossFunction<TokenBatch> loss = (m, batch) =>
        {
            var record = LanguageModeling.NextTokenLoss(m, batch);
            return record with { Metrics = new Dictionary<string, Tensor> { ["twice_loss"] = record.Loss.detach() * 2 } };
        };
        var groups = Trainer.DecayGroups(model, 0.1);
        Assert.DoesNotContain(groups.SelectMany(g => g.Parameters), p => p.Name == "model.embed_tokens.weight");

        var trainer = new Trainer<TokenBatch>(model, new FixedBatches(), loss, groups, parallel, Settings(10), dir, new JsonObject());
        Assert.Equal(10, trainer.Train(resume: false));

        Assert.Equal(10, syncs);
        Assert.True(before.eq(embedding).all().item<bool>(), "a frozen parameter changed");
        Assert.False(matrixBefore.eq(someMatrix).all().item<bool>(), "a trained parameter did not change");
        var metrics = MetricsLog.Read(Path.Combine(dir, MetricsLog.FileName));
        Assert.Equal(10, metrics.Count);
        Assert.All(metrics, m => Assert.Equal(2 * m.TrainLoss, m.Metrics!["twice_loss"], 1e-5));
        Assert.True(metrics[^1].TrainLoss < metrics[0].TrainLoss, "loss should fall on a fixed batch");
        // The checkpoint holds the whole module but optimizer state only for what was trained.
        var optimizerState = TianGong.Checkpoints.SafeTensors.Load(Path.Combine(TrainingCheckpoint.List(dir)[^1].Dir, "optimizer.safetensors"));
        Assert.DoesNotContain(optimizerState.Keys, k => k.StartsWith("model.embed_tokens."));
        Assert.Contains(optimizerState.Keys, k => k.StartsWith("model.layers.0.self_attn.q_proj.weight"));
    }

    [Fact]
    public void A_parameter_group_holding_a_frozen_parameter_is_refused()
    {
        using var model = TestModels.Create("llama");
        var (name, p) = model.named_parameters().First();
        p.requires_grad = false;
        var e = Assert.Throws<ArgumentException>(() => new AdamW([new ParameterGroup([(name, p)])], new AdamWOptions()));
        Assert.Contains(name, e.Message);
    }

    [Fact]
    public void Training_can_start_from_a_model_folder()
    {
        var dir = TestModels.TempDir();
        var corpus = TrainingTests.WriteCorpus(dir);
        var home = Path.Combine(dir, "home");
        var first = Path.Combine(dir, "first");
        Pretraining.Run(PretrainConfig.Parse(TrainingTests.TinyConfig(corpus), "t.json"), new PretrainOptions(first, Home: home));
        var firstLosses = MetricsLog.Read(Path.Combine(first, Pretraining.MetricsFile));

        var json = TrainingTests.TinyConfig(corpus, maxSteps: 3);
        json["training"]!["init_from"] = first;
        var second = Path.Combine(dir, "second");
        Pretraining.Run(PretrainConfig.Parse(json, "t.json"), new PretrainOptions(second, Home: home));
        var secondLosses = MetricsLog.Read(Path.Combine(second, Pretraining.MetricsFile));
        // Random init starts near ln(vocab) ≈ 5.7; the loaded weights start where the first run ended (≈ 3.2).
        Assert.True(secondLosses[0].TrainLoss < firstLosses[0].TrainLoss - 1.5, $"{secondLosses[0].TrainLoss} vs {firstLosses[0].TrainLoss}");
        Assert.Equal(firstLosses[^1].TrainLoss, secondLosses[0].TrainLoss, 0.5);

        var missing = Assert.Throws<TianGongException>(() => Pretraining.Run(PretrainConfig.Parse(json, "t.json"),
            new PretrainOptions(Path.Combine(dir, "third"), Home: home, InitFrom: Path.Combine(dir, "nowhere"))));
        Assert.Contains("training.init_from", missing.Message);
        Assert.Contains("nowhere", missing.Message);
    }

    [Fact]
    public void Temporary_files_of_an_interrupted_save_are_removed_on_the_next_start()
    {
        var dir = TestModels.TempDir();
        var corpus = TrainingTests.WriteCorpus(dir);
        var config = PretrainConfig.Parse(TrainingTests.TinyConfig(corpus, maxSteps: 7), "t.json");
        var run = Path.Combine(dir, "run");
        Pretraining.Run(config, new PretrainOptions(run, Home: Path.Combine(dir, "home")));
        // What kill -9 in the middle of the next checkpoint leaves behind.
        var tmpCheckpoint = Directory.CreateDirectory(Path.Combine(run, ".checkpoint-14.tmp-0123abcd")).FullName;
        File.WriteAllText(Path.Combine(tmpCheckpoint, "model.safetensors"), "half");
        File.WriteAllText(Path.Combine(run, "model.safetensors.tmp-a1b2c3d4e5f6"), "half");
        File.WriteAllText(Path.Combine(run, "metrics.jsonl.tmp-a1b2c3d4e5f6"), "half");

        var messages = new List<string>();
        Pretraining.Run(config, new PretrainOptions(run, Resume: true, MaxSteps: 8, Home: Path.Combine(dir, "home")), new PretrainCallbacks(Status: messages.Add));

        Assert.Empty(Directory.GetFileSystemEntries(run, "*.tmp-*"));
        Assert.Contains(messages, m => m.Contains("interrupted save") && m.Contains("model.safetensors.tmp-a1b2c3d4e5f6"));
        Assert.Equal(new long[] { 7, 8 }, TrainingCheckpoint.List(run).Select(c => c.Step));
    }

    [Fact]
    public void The_error_of_a_full_disk_is_recognised()
    {
        if (!File.Exists("/dev/full")) return; // Linux device; the tmpfs test below covers the whole path
        var e = Assert.ThrowsAny<IOException>(() =>
        {
            using var full = new FileStream("/dev/full", FileMode.Open, FileAccess.Write);
            full.Write(new byte[4096]);
            full.Flush();
        });
        Assert.True(DiskFull.Is(e), $"{e.HResult}: {e.Message}");
        Assert.False(DiskFull.Is(new IOException("permission denied")));
    }

    [Fact]
    public void A_full_disk_during_a_checkpoint_keeps_the_previous_one_and_fails_with_one_line()
    {
        var dir = TestModels.TempDir();
        var corpus = TrainingTests.WriteCorpus(dir);
        var config = PretrainConfig.Parse(TrainingTests.TinyConfig(corpus, maxSteps: 14), "t.json");
        var run = Path.Combine(dir, "run");
        Directory.CreateDirectory(run);
        // A 4 MiB tmpfs as the run folder: mounting needs CAP_SYS_ADMIN (root, as CI runs); without it there is no
        // honest way to fill a disk, and the /dev/full test above still checks the recognition.
        if (!Tmpfs.TryMount(run, 4 << 20)) return;
        try
        {
            var error = Assert.Throws<TianGongException>(() => Pretraining.Run(config, new PretrainOptions(run, Home: Path.Combine(dir, "home")),
                new PretrainCallbacks(Progress: p => { if (p.Step == 8) Tmpfs.Fill(Path.Combine(run, "filler")); })));

            Assert.Contains("no space left on device", error.Message);
            Assert.Contains("checkpoint-7", error.Message);
            Assert.DoesNotContain('\n', error.Message);
            var kept = Assert.Single(TrainingCheckpoint.List(run));
            Assert.Equal(7, kept.Step);
            Assert.Empty(Directory.GetFileSystemEntries(run, "*.tmp-*"));
            File.Delete(Path.Combine(run, "filler"));
            var resumed = Pretraining.Run(config, new PretrainOptions(run, Resume: true, MaxSteps: 9, Home: Path.Combine(dir, "home")));
            Assert.Equal(9, resumed.Steps); // the kept checkpoint is complete: training continues from it
        }
        finally
        {
            Tmpfs.Unmount(run);
        }
    }

    private static class Tmpfs
    {
        [DllImport("libc", SetLastError = true)]
        private static extern int mount(string source, string target, string fstype, ulong flags, string data);

        [DllImport("libc", SetLastError = true)]
        private static extern int umount2(string target, int flags);

        public static bool TryMount(string dir, long bytes) =>
            OperatingSystem.IsLinux() && mount("tmpfs", dir, "tmpfs", 0, $"size={bytes}") == 0;

        public static void Unmount(string dir) => umount2(dir, 2 /* MNT_DETACH */);

        /// <summary>Writes zeros until the file system refuses.</summary>
        public static void Fill(string path)
        {
            using var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 0);
            var block = new byte[64 << 10];
            try
            {
                while (true) stream.Write(block);
            }
            catch (IOException)
            {
                // full
            }
        }
    }
}
