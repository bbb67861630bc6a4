using F = TorchSharp.torch.nn.functional;

namespace TianGong.Compression.Distillation;

/// <summary>
/// Knowledge distillation's losses (Hinton, Vinyals and Dean 2015): the KL divergence from the teacher's
/// temperature-softened next-token distribution to the student's, scaled by T² so its gradients keep their size as T
/// grows, mixed with the ordinary next-token cross-entropy by alpha.
/// </summary>
public static class DistillationLoss
{
    /// <summary>
    /// T² · KL(softmax(teacher / T) ‖ softmax(student / T)), averaged over token positions. Logits are (…, V); computed in
    /// fp32 whatever the models' dtype. Zero exactly when the two distributions agree.
    /// </summary>
    public static Tensor SoftTargetKL(Tensor studentLogits, Tensor teacherLogits, double temperature)
    {
        if (!(temperature > 0)) throw new TianGongException($"--temperature: must be positive, got {temperature}");
        var v = studentLogits.shape[^1];
        var s = F.log_softmax(studentLogits.reshape(-1, v).to(ScalarType.Float32) / temperature, 1);
        var t = F.log_softmax(teacherLogits.reshape(-1, v).to(ScalarType.Float32) / temperature, 1);
        var perPosition = (t.exp() * (t - s)).sum(1);                                  // (N,)
        return perPosition.mean() * (temperature * temperature);
    }

    /// <summary>alpha · soft + (1 − alpha) · hard: alpha 1 learns only from the teacher, 0 only from the text.</summary>
    public static Tensor Mix(Tensor hard, Tensor soft, double alpha)
    {
        if (alpha is < 0 or > 1 || double.IsNaN(alpha)) throw new TianGongException($"--alpha: must be in [0, 1], got {alpha}");
        return soft * alpha + hard * (1 - alpha);
    }
}
