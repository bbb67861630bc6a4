using TianGong.Checkpoints;
using TianGong.Compression.Distillation;
using TianGong.Models;
using TianGong.Tests.Training;
using TianGong.Tests.Tuning;
using TianGong.Tokenizers;
using TianGong.Training;

namespace TianGong.Tests.Compression;

[Collection(nameof(GlobalRandomState))]
public class DistillationTests
{
    [Fact]
    public void Kl_is_zero_when_the_student_is_the_teacher()
    {
        manual_seed(1);
        using var logits = randn(2, 5, 11) * 3;
        foreach (var t in new[] { 1.0, 2.0, 4.0 })
            Assert.InRange(DistillationLoss.SoftTargetKL(logits, logits.clone(), t).item<float>(), -1e-6, 1e-6);
    }

    [Fact]
    public void Kl_is_the_softened_divergence_scaled_by_t_squared()
    {
        double[] student = [1, 0, -1], teacher = [0, 2, 1];
        using var s = tensor(student.Select(x => (float)x).ToArray()).reshape(1, 1, 3);
        using var t = tensor(teacher.Select(x => (float)x).ToArray()).reshape(1, 1, 3);
        foreach (var temperature in new[] { 1.0, 3.0 })
        {
            // KL(p ‖ q) of the softmaxes at temperature T, by hand.
            double[] Softmax(double[] z) { var e = z.Select(x => Math.Exp(x / temperature)).ToArray(); return e.Select(x => x / e.Sum()).ToArray(); }
            var (p, q) = (Softmax(teacher), Softmax(student));
            double kl = p.Select((pi, i) => pi * Math.Log(pi / q[i])).Sum();
            Assert.Equal(temperature * temperature * kl, DistillationLoss.SoftTargetKL(s, t, temperature).item<float>(), 5);
        }
        Assert.Throws<TianGongException>(() => DistillationLoss.SoftTargetKL(s, t, 0));
    }

    [Fact]
    public void Alpha_mixes_the_soft_and_hard_losses()
    {
        using var hard = tensor(2f);
        using var soft = tensor(6f);
        Assert.Equal(3f, DistillationLoss.Mix(hard, soft, 0.25).item<float>(), 5);
        Assert.Equal(2f, DistillationLoss.Mix(hard, soft, 0).item<float>(), 5);
        Assert.Equal(6f, DistillationLoss.Mix(hard, soft, 1).item<float>(), 5);
        Assert.Throws<TianGongException>(() => DistillationLoss.Mix(hard, soft, 1.5));
    }

    [Fact]
    public void Distilling_into_a_smaller_config_student_lowers_its_held_out_kl_to_the_teacher()
    {
        var teacherDir = Teacher();
        var studentConfig = StudentConfig(TestModels.Llama() with { HiddenSize = 16, IntermediateSize = 32, NumHiddenLayers = 1, NumAttentionHeads = 2, NumKeyValueHeads = 1 });
        var outDir = Path.Combine(TestModels.TempDir(), "student");
        var settings = new DistillationSettings(Temperature: 2, Alpha: 0.9, LayerMap: [new LayerPair(1, 0)]);
        var result = Distillation.Run(new DistillOptions(teacherDir, studentConfig, outDir, TuningFolders.TextFile(), TuningFolders.Training(steps: 60, lr: 2e-2),
            settings, Home: TestModels.TempDir()));

        Assert.True(result.FinalKL < 0.6 * result.InitialKL, $"held-out KL {result.InitialKL} → {result.FinalKL}");
        var records = MetricsLog.Read(result.MetricsPath);
        Assert.Equal(60, records.Count);
        Assert.True(records[^1].Metrics!["kl"] < records[0].Metrics!["kl"], $"train kl {records[0].Metrics!["kl"]} → {records[^1].Metrics!["kl"]}");
        Assert.True(records[^1].Metrics!.ContainsKey("hidden_mse"));
        Assert.True(File.Exists(result.LossPlotPath));

        // The run folder is the student's model folder: it loads with the teacher's tokenizer and has the small shape.
        using var student = ModelFolder.Load(outDir);
        using var teacher = ModelFolder.Load(teacherDir);
        Assert.NotNull(student.Tokenizer);
        Assert.Equal(16, ((ICausalLMConfig)student.Config).ModelWidth);
        Assert.Equal(result.StudentParameters, student.AsCausalLM("t").ParameterCount());
        Assert.True(result.StudentParameters < result.TeacherParameters);
    }

    [Fact]
    public void A_student_config_of_the_teachers_width_starts_from_the_teachers_layers()
    {
        var teacherDir = Teacher();
        var studentConfig = StudentConfig(TestModels.Llama() with { NumHiddenLayers = 1 });
        var outDir = Path.Combine(TestModels.TempDir(), "student");
        Distillation.Run(new DistillOptions(teacherDir, studentConfig, outDir, TuningFolders.TextFile(), TuningFolders.Training(steps: 1, lr: 1e-12),
            new DistillationSettings(), InitFromTeacher: true, Home: TestModels.TempDir()));
        var teacher = SafeTensors.Load(Path.Combine(teacherDir, ModelFolder.WeightsFile));
        var student = SafeTensors.Load(Path.Combine(outDir, ModelFolder.WeightsFile));
        Assert.DoesNotContain(student.Keys, k => k.StartsWith("model.layers.1."));
        foreach (var key in student.Keys)
            Assert.True(student[key].allclose(teacher[key], rtol: 0, atol: 1e-6), $"{key} not taken from the teacher");
    }

    [Fact]
    public void A_student_with_another_tokenizer_is_a_one_line_error_naming_both()
    {
        var teacherDir = Teacher();
        var other = ByteLevelBpeTrainer.Train(Enumerable.Repeat("the quick brown fox jumps over the lazy dog", 50), new BpeTrainerOptions(VocabSize: 300, MinFrequency: 2));
        var studentDir = TestModels.TempDir();
        using (var model = TestModels.Create("llama", vocab: other.VocabSize))
            ModelFolder.Save(studentDir, model, TestModels.Config("llama", other.VocabSize).WithTokenizer(other.VocabSize, other.BosId, other.EosId), other);
        var error = Assert.Throws<TianGongException>(() => Distillation.Run(new DistillOptions(teacherDir, studentDir, Path.Combine(TestModels.TempDir(), "o"),
            TuningFolders.TextFile(), TuningFolders.Training(), new DistillationSettings(), Home: TestModels.TempDir())));
        Assert.Contains(teacherDir, error.Message);
        Assert.Contains(studentDir, error.Message);
        Assert.Contains("tokenizer", error.Message);
        Assert.DoesNotContain('\n', error.Message);
    }

    /// <summary>A tiny llama teacher whose LM head is scaled up, so its next-token distributions are peaked (a random one's are nearly uniform).</summary>
    private static string Teacher()
    {
        var tokenizer = TuningFolders.Tokenizer();
        var dir = TestModels.TempDir();
        using var model = TestModels.Create("llama", seed: 7, vocab: tokenizer.VocabSize);
        using (no_grad())
            foreach (var (name, p) in model.named_parameters())
                if (name == "lm_head.weight") p.mul_(40);
        ModelFolder.Save(dir, model, TestModels.Config("llama", tokenizer.VocabSize).WithTokenizer(tokenizer.VocabSize, tokenizer.BosId, tokenizer.EosId), tokenizer);
        return dir;
    }

    private static string StudentConfig(IModelConfig config)
    {
        var path = Path.Combine(TestModels.TempDir(), "config.json");
        ModelConfigs.Save(config, path);
        return path;
    }
}
