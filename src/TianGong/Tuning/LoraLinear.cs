using TianGong.Models.Layers;
using TorchSharp.Modules;

namespace TianGong.Tuning;

/// <summary>
/// LoRA (Hu et al. 2021) as PEFT's <c>lora.Linear</c>: y = base(x) + lora_B(lora_A(dropout(x))) · scaling, with
/// scaling = alpha / r (rsLoRA: alpha / √r). The base weight keeps its key (<c>q_proj.weight</c>); the adapter's are
/// <c>q_proj.lora_A.weight</c> (r, in) and <c>q_proj.lora_B.weight</c> (out, r), PEFT's names without the adapter name.
/// GPT-2's Conv1D (fan_in_fan_out) gets the same A and B; only the merge transposes.
/// </summary>
public sealed class LoraLinear : LinearWrapper
{
    private readonly Linear lora_A;
    private readonly Linear lora_B;
    private readonly Dropout? lora_dropout;

    public LoraLinear(LinearParts original, int rank, double alpha, double dropout, bool useRsLora) : base(nameof(LoraLinear), original)
    {
        if (rank < 1) throw new TianGongException($"lora r: must be at least 1, got {rank}");
        var device = original.Weight.device;
        // PEFT's default init: A ~ kaiming_uniform(a=√5) (nn.Linear's own), B = 0, so training starts from the base model.
        lora_A = nn.Linear(original.InFeatures, rank, hasBias: false, device: device, dtype: original.Weight.dtype);
        lora_B = nn.Linear(rank, original.OutFeatures, hasBias: false, device: device, dtype: original.Weight.dtype);
        using (no_grad()) lora_B.weight.zero_();
        if (dropout > 0) lora_dropout = nn.Dropout(dropout);
        Rank = rank;
        Scaling = useRsLora ? alpha / Math.Sqrt(rank) : alpha / rank;
        RegisterComponents();
    }

    public int Rank { get; }

    public double Scaling { get; }

    public Parameter A => lora_A.weight;

    public Parameter B => lora_B.weight;

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var dropped = lora_dropout?.forward(x) ?? x;
        var update = lora_B.forward(lora_A.forward(dropped.to(lora_A.weight.dtype)));
        return (BaseForward(x) + update * Scaling).MoveToOuterDisposeScope();
    }

    /// <summary>The update the adapter adds to the stored base weight: scaling · B A, transposed for Conv1D.</summary>
    public Tensor DeltaWeight()
    {
        using var scope = NewDisposeScope();
        var delta = B.matmul(A) * Scaling;                                                    // (out, in)
        return (Parts.FanInFanOut ? delta.t() : delta).to(Parts.Weight.dtype).MoveToOuterDisposeScope();
    }
}
