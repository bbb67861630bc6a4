using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Data;
using TianGong.Models;
using TianGong.Training;
using TianGong.Tuning;
using TianGong.Tuning.Data;

namespace TianGong.Compression.Distillation;

/// <param name="Teacher">The teacher model folder.</param>
/// <param name="Student">A model folder (continued from its weights) or a config.json file (built fresh, with the teacher's tokenizer).</param>
/// <param name="Data">chinese-poetry or a text/JSONL file, prepared as fine-tuning's lm task prepares it.</param>
/// <param name="InitFromTeacher">For a config student: copy every teacher tensor whose name and shape the student shares (layer i from layer i).</param>
public sealed record DistillOptions(
    string Teacher,
    string Student,
    string OutDir,
    string Data,
    TrainingSection Training,
    DistillationSettings Settings,
    bool InitFromTeacher = false,
    IReadOnlyList<string>? Collections = null,
    bool Resume = false,
    string? Home = null,
    Device? Device = null);

/// <param name="InitialKL">KL(teacher ‖ student) at T = 1 on the held-out batches for the student as given (with --resume too: before its checkpoint loads); <see cref="FinalKL"/> after training.</param>
public sealed record DistillResult(string OutDir, long Steps, bool Interrupted, double? FinalValLoss, long TeacherParameters, long StudentParameters,
    double InitialKL, double FinalKL, string MetricsPath, string LossPlotPath);

/// <summary>
/// Knowledge distillation: a frozen teacher's softened next-token distributions (and, optionally, its hidden states)
/// teach a student through the generic <see cref="Trainer{TBatch}"/>, on the same token windows fine-tuning's lm task
/// uses. The run folder holds metrics.jsonl (with the kl and ce parts), loss.png and checkpoint-N as every training
/// run does, and is itself the student's model folder.
/// </summary>
public static class Distillation
{
    private static readonly string[] TokenizerFiles = ["tokenizer.json", "vocab.json", "merges.txt", "tokenizer.model"];

    public static DistillResult Run(DistillOptions options, PretrainCallbacks? callbacks = null, CancellationToken cancel = default)
    {
        callbacks ??= new PretrainCallbacks();
        var training = options.Training;
        set_num_threads(training.Threads ?? Environment.ProcessorCount);
        var outDir = Path.GetFullPath(options.OutDir);
        foreach (var source in new[] { options.Teacher, options.Student })
            if (Path.GetFullPath(source).TrimEnd('/') == outDir.TrimEnd('/'))
                throw new TianGongException($"{options.OutDir}: the output folder must differ from the teacher and student folders");
        TrainingCheckpoint.CheckRunFolder(outDir, options.Resume);
        var device = options.Device ?? CPU;
        var home = options.Home ?? DatasetLocations.Home();

        using var teacherFolder = ModelFolder.Load(options.Teacher, training.ScalarType);
        var teacher = teacherFolder.AsCausalLM("distill");
        var tokenizer = teacherFolder.Tokenizer ?? throw new TianGongException($"{options.Teacher}: no tokenizer; distilling on text needs one");
        manual_seed(training.Seed);
        using var studentFolder = LoadStudent(options, teacherFolder, tokenizer.VocabSize, tokenizer.BosId, tokenizer.EosId, callbacks.Status);
        var student = studentFolder.AsCausalLM("distill");
        int context = Math.Min(teacher.Config.ContextLength, student.Config.ContextLength);
        training = training with { SeqLen = Math.Min(training.SeqLen, context) };
        training.Validate("distill", context);

        using var tokens = TextData.Prepare(options.Data, options.Collections, tokenizer, options.Teacher, home, callbacks.Status);
        if (Math.Min(tokens.TrainTokens, tokens.ValTokens) < training.SeqLen + 1)
            throw new TianGongException($"{options.Data}: {tokens.TrainTokens} training and {tokens.ValTokens} held-out tokens; each split needs at least --seq-len + 1 ({training.SeqLen + 1}): use more text or a shorter --seq-len");

        using var module = new DistillationModule(teacher, student, options.Settings);
        foreach (var p in module.parameters()) p.requires_grad = true;
        if (device.type != DeviceType.CPU)
        {
            teacher.to(device);
            module.to(device);
        }
        var data = new NextTokenData(new BatchSampler(tokens, (ulong)training.Seed), training.BatchSize, training.SeqLen, training.EvalBatches, device);
        double initialKL = HeldOutKL(teacher, student, data);
        callbacks.Status?.Invoke($"distilling {options.Teacher} ({teacher.ParameterCount():N0} parameters) into {options.Student} " +
                                 $"({student.ParameterCount():N0}); held-out KL to the teacher {initialKL:F4}");

        var run = RunFolder.Prepare(outDir, callbacks.Status);
        var runConfig = new JsonObject
        {
            ["teacher"] = Path.GetFullPath(options.Teacher),
            ["student"] = Path.GetFullPath(options.Student),
            ["data"] = options.Data,
            ["distillation"] = ConfigJson.ToNode(options.Settings with { LayerMap = null }),
            ["layer_map"] = options.Settings.LayerMap is { } map ? string.Join(",", map.Select(p => $"{p.Teacher}:{p.Student}")) : null,
            ["training"] = ConfigJson.ToNode(training),
        };
        // Tokenizer and generation files come with the student folder, or from the teacher for a config student (same tokenizer).
        var companions = Directory.Exists(options.Student) ? options.Student : options.Teacher;
        var trainer = new Trainer<TokenBatch>(module, data, DistillationModule.Loss, Trainer.DecayGroups(module, training.WeightDecay),
            ParallelContext.SingleProcess(device), training, outDir, runConfig)
        {
            TokensPerStep = (long)training.BatchSize * training.SeqLen * training.GradAccum,
            OnProgress = callbacks.Progress,
            OnCheckpoint = _ =>
            {
                AdapterFolder.SavePlainModel(companions, outDir, student, studentFolder.Config);
                run.SaveLossPlot();
            },
        };
        long steps = trainer.Train(options.Resume, cancel);
        double finalKL = HeldOutKL(teacher, student, data);
        return new DistillResult(outDir, steps, steps < training.MaxSteps, run.LastValLoss(), teacher.ParameterCount(), student.ParameterCount(),
            initialKL, finalKL, run.MetricsPath, run.LossPlotPath);
    }

    /// <summary>KL(teacher ‖ student) at T = 1 on the run's held-out batches.</summary>
    private static double HeldOutKL(CausalLM teacher, CausalLM student, NextTokenData data)
    {
        bool training = student.training;
        student.eval();
        try
        {
            var batches = data.ValidationBatches().ToList();
            try { return DistillationModule.MeanKL(teacher, student, batches); }
            finally { foreach (var b in batches) b.Dispose(); }
        }
        finally { student.train(training); }
    }

    /// <summary>The student: a model folder (which must share the teacher's tokenizer), or a config file built fresh.</summary>
    private static LoadedModel LoadStudent(DistillOptions options, LoadedModel teacher, int vocabSize, int bosId, int eosId, Action<string>? status)
    {
        if (Directory.Exists(options.Student))
        {
            var folder = ModelFolder.Load(options.Student, options.Training.ScalarType);
            try
            {
                CheckSameTokenizer(options.Teacher, options.Student, vocabSize, ((ICausalLMConfig)folder.Config).VocabSize);
                if (options.InitFromTeacher) CopyMatchingTensors(teacher.Module, folder.Module, status);
                return folder;
            }
            catch
            {
                folder.Dispose();
                throw;
            }
        }
        if (!File.Exists(options.Student)) throw new TianGongException($"{options.Student}: student not found; give a model folder or a config.json file");
        var config = ModelConfigs.Load(options.Student) as ICausalLMConfig
                     ?? throw new TianGongException($"{options.Student}: not a decoder-only language model config; the student must be one");
        if (config.VocabSize != vocabSize)
            status?.Invoke($"{options.Student}: vocab_size {config.VocabSize} → {vocabSize}, the teacher's tokenizer (teacher and student share it)");
        config = config.WithTokenizer(vocabSize, bosId, eosId);
        var model = (CausalLM)ModelConfigs.CreateModel(config);
        model.InitializeWeights();
        if (options.Training.ScalarType != ScalarType.Float32) model.to(options.Training.ScalarType);
        if (options.InitFromTeacher) CopyMatchingTensors(teacher.Module, model, status);
        return new LoadedModel(model, config, teacher.Tokenizer, options.Teacher);
    }

    /// <summary>Same tokenizer files byte for byte where both folders have them, and the same vocabulary size; else a one-line error naming both.</summary>
    internal static void CheckSameTokenizer(string teacherDir, string studentDir, int teacherVocab, int studentVocab)
    {
        var differing = TokenizerFiles.Where(f =>
        {
            var (a, b) = (Path.Combine(teacherDir, f), Path.Combine(studentDir, f));
            return File.Exists(a) != File.Exists(b) || (File.Exists(a) && !File.ReadAllBytes(a).AsSpan().SequenceEqual(File.ReadAllBytes(b)));
        }).ToList();
        if (differing.Count > 0)
            throw new TianGongException($"teacher {teacherDir} and student {studentDir} use different tokenizers ({string.Join(", ", differing)} differ); distillation needs the same tokenizer");
        if (teacherVocab != studentVocab)
            throw new TianGongException($"teacher {teacherDir} (vocab {teacherVocab}) and student {studentDir} (vocab {studentVocab}) use different vocabularies; distillation needs the same tokenizer");
    }

    /// <summary>Initialises the student from the teacher where shapes allow: every tensor of the same name and shape (so student layer i takes teacher layer i).</summary>
    private static void CopyMatchingTensors(nn.Module teacher, nn.Module student, Action<string>? status)
    {
        var source = teacher.state_dict();
        int copied = 0, total = 0;
        using var _ = no_grad();
        foreach (var (key, value) in student.state_dict())
        {
            total++;
            if (source.TryGetValue(key, out var t) && t.shape.SequenceEqual(value.shape))
            {
                value.copy_(t);
                copied++;
            }
        }
        status?.Invoke($"initialised {copied} of {total} student tensors from the teacher (same name and shape)");
    }
}
