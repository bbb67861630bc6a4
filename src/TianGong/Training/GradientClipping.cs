using TorchSharp.Modules;

namespace TianGong.Training;

/// <summary>
/// torch.nn.utils.clip_grad_norm_ (the 2-norm over all gradients) for the parameters one process trains whole.
/// <see cref="Parallelism.GlobalNormClipping"/> does the same when gradients are spread over ranks.
/// </summary>
public static class GradientClipping
{
    /// <summary>
    /// Scales the gradients in place so that their global 2-norm is at most <paramref name="maxNorm"/>. On the CPU this
    /// is libtorch's clip_grad_norm_, which reads the norm and skips the scaling pass when nothing is clipped; on a GPU,
    /// <see cref="ScaleOnDevice"/>, which never waits for the device.
    /// </summary>
    public static void ClipGlobalNorm(IReadOnlyList<Parameter> parameters, double maxNorm)
    {
        var gradients = parameters.Select(p => p.grad).OfType<Tensor>().ToList();
        if (gradients.Count == 0) return;
        if (gradients[0].device_type == DeviceType.CPU) nn.utils.clip_grad_norm_(parameters, maxNorm);
        else ScaleOnDevice(gradients, maxNorm);
    }

    /// <summary>
    /// PyTorch's arithmetic (torch/nn/utils/clip_grad.py): each gradient's 2-norm in its dtype, the 2-norm of those,
    /// the coefficient maxNorm / (norm + 1e-6) clamped at 1, and every gradient multiplied by it, all on the device.
    /// </summary>
    /// <remarks>
    /// libtorch's C++ clip_grad_norm_ returns the norm as a double, so the host waited there for the backward pass to
    /// finish and then queued the optimizer's thousands of small kernels one by one while the GPU idled. Without the
    /// read, the host queues them while the GPU is still on the backward pass (docs/benchmarks.md, GPU).
    /// </remarks>
    public static void ScaleOnDevice(IReadOnlyList<Tensor> gradients, double maxNorm)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var norms = stack(gradients.Select(g => linalg.vector_norm(g, 2)).ToArray());
        var total = linalg.vector_norm(norms, 2);
        var coefficient = full_like(total, maxNorm).div_(total + 1e-6).clamp_max(1.0);
        foreach (var g in gradients) g.mul_(coefficient);
    }
}
