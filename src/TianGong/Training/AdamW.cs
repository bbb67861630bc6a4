using TorchSharp.Modules;

namespace TianGong.Training;

/// <param name="Fused">Update fp32 CPU parameters in one pass each (<see cref="FusedAdamW"/>, PyTorch's <c>fused=True</c>);
/// false runs the same update as separate libtorch ops.</param>
public sealed record AdamWOptions(double Beta1 = 0.9, double Beta2 = 0.95, double Eps = 1e-8, double WeightDecay = 0.1, bool Fused = true);

/// <summary>
/// Parameters that share optimizer settings (PyTorch's param_groups). A parameter in no group is frozen: the
/// optimizer keeps no state for it and never changes it.
/// </summary>
/// <param name="WeightDecay">The group's decoupled weight decay; null takes <see cref="AdamWOptions.WeightDecay"/>.</param>
/// <param name="LrScale">The group's learning rate as a multiple of the scheduled one (layer-wise decay in fine-tuning).</param>
public sealed record ParameterGroup(IReadOnlyList<(string Name, Parameter Param)> Parameters, double? WeightDecay = null, double LrScale = 1);

/// <summary>
/// What the trainer and checkpoints need of an optimizer: <see cref="AdamW"/>, or a sharded one (ZeRO) that a parallel
/// context supplies. <see cref="StateDict"/> is keyed by parameter name whatever the sharding, so a checkpoint resumes
/// on another layout; for a sharded optimizer it is a collective call that every rank makes.
/// </summary>
public interface IOptimizer : IDisposable
{
    IEnumerable<Parameter> Parameters { get; }
    long StepCount { get; }
    void Step(double lr);
    void ZeroGrad();
    Dictionary<string, Tensor> StateDict();
    void LoadStateDict(IReadOnlyDictionary<string, Tensor> state, long stepCount, string source);
}

/// <summary>
/// AdamW as PyTorch defines it (decoupled weight decay, bias-corrected moments), with its state keyed by
/// parameter name so that it saves to safetensors and maps back onto a rebuilt model on resume.
/// When the model holds bf16 weights, the optimizer keeps an fp32 master copy of each and updates that
/// (Megatron's mixed-precision optimizer): tiny updates would otherwise round away in bf16.
/// </summary>
public sealed class AdamW : IOptimizer
{
    private sealed record Slot(string Name, Parameter Param, Tensor? Master, Tensor ExpAvg, Tensor ExpAvgSq, double WeightDecay, double LrScale = 1);

    private readonly List<Slot> slots = [];
    private readonly AdamWOptions options;

    /// <param name="noDecay">Names of parameters exempt from weight decay (norms, biases, embeddings).</param>
    public AdamW(IEnumerable<(string Name, Parameter Param)> parameters, AdamWOptions options, ISet<string> noDecay)
    {
        this.options = options;
        foreach (var (name, p) in parameters)
            if (p.requires_grad) AddSlot(name, p, noDecay.Contains(name) ? 0 : options.WeightDecay);
    }

    /// <summary>Optimizes exactly the parameters of <paramref name="groups"/>, in their order; each must require grad and appear once.</summary>
    public AdamW(IEnumerable<ParameterGroup> groups, AdamWOptions options)
    {
        this.options = options;
        var seen = new HashSet<string>();
        foreach (var group in groups)
            foreach (var (name, p) in group.Parameters)
            {
                if (!seen.Add(name)) throw new ArgumentException($"parameter '{name}' is in more than one group", nameof(groups));
                if (!p.requires_grad) throw new ArgumentException($"parameter '{name}' is frozen (requires_grad is false) but in an optimizer group", nameof(groups));
                AddSlot(name, p, group.WeightDecay ?? options.WeightDecay, group.LrScale);
            }
    }

    private void AddSlot(string name, Parameter p, double weightDecay, double lrScale = 1)
    {
        Tensor? master = p.dtype == ScalarType.Float32 ? null : p.detach().to(ScalarType.Float32).clone();
        slots.Add(new Slot(name, p,
            master,
            zeros(p.shape, ScalarType.Float32, p.device),
            zeros(p.shape, ScalarType.Float32, p.device),
            weightDecay, lrScale));
    }

    /// <summary>Number of updates applied so far (PyTorch's per-parameter <c>step</c>, the same for all here).</summary>
    public long StepCount { get; private set; }

    public IEnumerable<Parameter> Parameters => slots.Select(s => s.Param);

    public IEnumerable<string> DecayedNames => slots.Where(s => s.WeightDecay != 0).Select(s => s.Name);

    public void Step(double scheduledLr)
    {
        StepCount++;
        double bc1 = 1 - Math.Pow(options.Beta1, StepCount);
        double bc2 = 1 - Math.Pow(options.Beta2, StepCount);
        using var _ = no_grad();
        foreach (var s in slots)
        {
            using var scope = NewDisposeScope();
            var grad = s.Param.grad;
            if (grad is null) continue;
            if (options.Fused && s.Master is null && FusedAdamW.Supports(s.Param, grad, s.ExpAvg, s.ExpAvgSq))
            {
                FusedAdamW.Step(s.Param, grad, s.ExpAvg, s.ExpAvgSq, scheduledLr * s.LrScale, s.WeightDecay, options, bc1, bc2); // one pass on CPU
                continue;
            }
            var g = grad.dtype == ScalarType.Float32 ? grad : grad.to(ScalarType.Float32);
            var w = s.Master ?? s.Param;
            double lr = scheduledLr * s.LrScale;
            if (s.WeightDecay != 0) w.mul_(1 - lr * s.WeightDecay);
            Update(w, g, s.ExpAvg, s.ExpAvgSq, lr, options, bc1, bc2);
            if (s.Master is not null) s.Param.copy_(s.Master);
        }
    }

    /// <summary>
    /// The Adam part of the step, after the decoupled weight decay (which the caller applies: per parameter here, per
    /// element over a flat slice in <see cref="Parallelism.ZeroOptimizer"/>): the moments move towards the gradient and
    /// the fp32 weights <paramref name="w"/> take the bias-corrected step. <paramref name="bc1"/>, <paramref name="bc2"/>: 1 − β^step.
    /// </summary>
    internal static void Update(Tensor w, Tensor g, Tensor expAvg, Tensor expAvgSq, double lr, AdamWOptions options, double bc1, double bc2)
    {
        expAvg.lerp_(g, 1 - options.Beta1);
        expAvgSq.mul_(options.Beta2).addcmul_(g, g, 1 - options.Beta2);
        var denom = (expAvgSq.sqrt() / Math.Sqrt(bc2)).add_(options.Eps);
        w.addcdiv_(expAvg, denom, -lr / bc1);
    }

    public void ZeroGrad()
    {
        foreach (var s in slots) s.Param.grad?.zero_();
    }

    /// <summary>Moments (and fp32 masters) by name: "{param}.exp_avg", "{param}.exp_avg_sq", "{param}.master".</summary>
    public Dictionary<string, Tensor> StateDict()
    {
        var state = new Dictionary<string, Tensor>();
        foreach (var s in slots)
        {
            state[s.Name + ".exp_avg"] = s.ExpAvg;
            state[s.Name + ".exp_avg_sq"] = s.ExpAvgSq;
            if (s.Master is not null) state[s.Name + ".master"] = s.Master;
        }
        return state;
    }

    /// <summary>Restores what <see cref="StateDict"/> saved; every expected tensor must be present with the same shape.</summary>
    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state, long stepCount, string source)
    {
        using var _ = no_grad();
        foreach (var s in slots)
        {
            Copy(s.Name + ".exp_avg", s.ExpAvg);
            Copy(s.Name + ".exp_avg_sq", s.ExpAvgSq);
            if (s.Master is not null) Copy(s.Name + ".master", s.Master);
        }
        StepCount = stepCount;

        void Copy(string key, Tensor into)
        {
            if (!state.TryGetValue(key, out var t))
                throw new TianGongException($"{source}: missing optimizer tensor '{key}'");
            if (!t.shape.SequenceEqual(into.shape))
                throw new TianGongException($"{source}: optimizer tensor '{key}' has shape [{string.Join(", ", t.shape)}], expected [{string.Join(", ", into.shape)}]");
            into.copy_(t);
        }
    }

    public void Dispose()
    {
        foreach (var s in slots)
        {
            s.Master?.Dispose();
            s.ExpAvg.Dispose();
            s.ExpAvgSq.Dispose();
        }
    }
}
