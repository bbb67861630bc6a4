using TianGong.Models;
using TianGong.Training;
using TorchSharp.Modules;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Compression.Distillation;

/// <summary>A teacher layer matched to a student layer: their outputs are compared through a learned projection.</summary>
public sealed record LayerPair(int Teacher, int Student)
{
    /// <summary>"0:0,2:1" → teacher 0 ↔ student 0, teacher 2 ↔ student 1.</summary>
    public static IReadOnlyList<LayerPair> ParseMap(string text)
    {
        var pairs = new List<LayerPair>();
        foreach (var item in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var parts = item.Split(':');
            if (parts.Length != 2 || !int.TryParse(parts[0], out var t) || !int.TryParse(parts[1], out var s) || t < 0 || s < 0)
                throw new TianGongException($"--layer-map: '{item}' is not teacher:student layer numbers (e.g. 0:0,2:1)");
            pairs.Add(new LayerPair(t, s));
        }
        if (pairs.Count == 0) throw new TianGongException("--layer-map: no layer pairs given (e.g. 0:0,2:1)");
        return pairs;
    }
}

/// <summary>How the student learns from the teacher.</summary>
/// <param name="Alpha">Weight of the soft-target KL; 1 − alpha weighs the next-token loss on the text.</param>
/// <param name="LayerMap">Hidden-state matching (MSE through a learned projection per pair); null: logits only.</param>
/// <param name="HiddenWeight">Weight of the hidden-state MSE added to the mixed loss.</param>
public sealed record DistillationSettings(double Temperature = 2.0, double Alpha = 0.5, IReadOnlyList<LayerPair>? LayerMap = null, double HiddenWeight = 1.0)
{
    public void Validate(ICausalLMConfig teacher, ICausalLMConfig student)
    {
        if (!(Temperature > 0)) throw new TianGongException($"--temperature: must be positive, got {Temperature}");
        if (Alpha is < 0 or > 1 || double.IsNaN(Alpha)) throw new TianGongException($"--alpha: must be in [0, 1], got {Alpha}");
        if (HiddenWeight < 0) throw new TianGongException($"--hidden-weight: must be non-negative, got {HiddenWeight}");
        foreach (var pair in LayerMap ?? [])
        {
            if (pair.Teacher >= teacher.LayerCount) throw new TianGongException($"--layer-map: teacher layer {pair.Teacher} does not exist (the teacher has {teacher.LayerCount})");
            if (pair.Student >= student.LayerCount) throw new TianGongException($"--layer-map: student layer {pair.Student} does not exist (the student has {student.LayerCount})");
        }
    }
}

/// <summary>
/// What the trainer trains in distillation: the student and, for hidden-state matching, one projection per layer pair
/// (student width → teacher width, as TinyBERT's W_h). The teacher is held but not registered, so it stays frozen,
/// in eval mode, and out of the checkpoints.
/// </summary>
public sealed class DistillationModule : nn.Module<Tensor, Tensor>
{
    private readonly CausalLM student;
    private readonly ModuleList<Linear> projections;
    private readonly CausalLM teacher;
    private readonly DistillationSettings settings;

    public DistillationModule(CausalLM teacher, CausalLM student, DistillationSettings settings) : base(nameof(DistillationModule))
    {
        this.teacher = teacher;
        this.student = student;
        this.settings = settings;
        settings.Validate(teacher.Config, student.Config);
        projections = new ModuleList<Linear>((settings.LayerMap ?? [])
            .Select(_ => nn.Linear(student.Config.ModelWidth, teacher.Config.ModelWidth, hasBias: false)).ToArray());
        register_module("student", student);
        register_module("projections", projections);
        foreach (var p in teacher.parameters()) p.requires_grad = false;
        teacher.eval();
    }

    public CausalLM Student => student;

    public override Tensor forward(Tensor inputIds) => student.forward(inputIds);

    /// <summary>The loss function for <see cref="Trainer{TBatch}"/>: mixed soft/hard loss (+ hidden MSE), with each part logged.</summary>
    public static LossRecord Loss(nn.Module model, TokenBatch batch) =>
        (model as DistillationModule ?? throw new ArgumentException($"distillation loss needs a {nameof(DistillationModule)}", nameof(model))).Loss(batch);

    public LossRecord Loss(TokenBatch batch)
    {
        bool hidden = projections.Count > 0;
        DecoderOutput taught;
        using (no_grad()) taught = teacher.Forward(new DecoderInput { InputIds = batch.Input, OutputHiddenStates = hidden });
        using var _ = taught;
        using var learned = student.Forward(new DecoderInput { InputIds = batch.Input, OutputHiddenStates = hidden });
        var hard = LanguageModeling.Loss(learned.Logits, batch.Target);
        var soft = DistillationLoss.SoftTargetKL(learned.Logits, taught.Logits, settings.Temperature);
        var loss = DistillationLoss.Mix(hard, soft, settings.Alpha);
        var metrics = new Dictionary<string, Tensor> { ["kl"] = soft.detach(), ["ce"] = hard.detach() };
        if (hidden)
        {
            var mse = zeros(1, dtype: ScalarType.Float32, device: hard.device).squeeze();
            for (int i = 0; i < settings.LayerMap!.Count; i++)
            {
                var pair = settings.LayerMap[i];
                // Hidden states as transformers lists them: [embeddings, layer 0's output, ...]; layer i's output is entry i + 1.
                var s = learned.HiddenStates![pair.Student + 1].to(ScalarType.Float32);
                var t = taught.HiddenStates![pair.Teacher + 1].to(ScalarType.Float32);
                mse = mse + F.mse_loss(projections[i].forward(s.to(projections[i].weight!.dtype)).to(ScalarType.Float32), t);
            }
            mse = mse / settings.LayerMap.Count;
            metrics["hidden_mse"] = mse.detach();
            loss = loss + mse * settings.HiddenWeight;
        }
        var aux = learned.AuxLoss;
        if (aux is not null) loss = loss + aux.to(ScalarType.Float32);
        return new LossRecord(loss, batch.Input.shape[0], metrics);
    }

    /// <summary>Mean KL(teacher ‖ student) at temperature 1 over <paramref name="batches"/>: how far the student still is from the teacher.</summary>
    public static double MeanKL(CausalLM teacher, CausalLM student, IEnumerable<TokenBatch> batches)
    {
        using var _ = no_grad();
        double sum = 0;
        long count = 0;
        foreach (var batch in batches)
        {
            using var scope = NewDisposeScope();
            sum += DistillationLoss.SoftTargetKL(student.forward(batch.Input), teacher.forward(batch.Input), 1.0).item<float>() * batch.Input.shape[0];
            count += batch.Input.shape[0];
        }
        return count == 0 ? throw new TianGongException("no held-out batches to measure the KL on") : sum / count;
    }
}
