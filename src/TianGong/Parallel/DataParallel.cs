using TianGong.Parallelism.Communication;
using TorchSharp.Modules;

namespace TianGong.Parallelism;

/// <summary>
/// Data parallelism over one communicator: identical starting weights (broadcast from the group's rank 0), and
/// gradients averaged after backward in buckets of about <c>bucketBytes</c> (one all-reduce per bucket, as
/// PyTorch DDP and Megatron's DistributedDataParallel do). TorchSharp exposes no per-parameter gradient hooks, so
/// communication starts after backward rather than overlapping it.
/// </summary>
public sealed class DataParallel(ICommunicator group, long bucketBytes)
{
    public ICommunicator Group => group;

    /// <summary>Copies rank 0's parameters and buffers to every rank of the group, so all ranks start from the same model.</summary>
    public void BroadcastParameters(nn.Module model)
    {
        using var _ = no_grad();
        foreach (var (_, p) in model.named_parameters()) BroadcastInPlace(p);
        foreach (var (_, b) in model.named_buffers()) BroadcastInPlace(b);
    }

    private void BroadcastInPlace(Tensor t)
    {
        if (t.is_contiguous())
        {
            group.Broadcast(t, root: 0);
            return;
        }
        using var staged = t.contiguous().cpu();
        group.Broadcast(staged, root: 0);
        t.copy_(staged);
    }

    /// <summary>Replaces each parameter's gradient with its mean over the group (parameters without a gradient are skipped on every rank alike).</summary>
    public void AllReduceGradients(IReadOnlyList<Parameter> parameters)
    {
        if (group.Size == 1) return;
        using var _ = no_grad();
        foreach (var bucket in Buckets(parameters.Where(p => p.grad is not null).ToList()))
        {
            using var scope = NewDisposeScope();
            var grads = bucket.Select(p => p.grad!).ToList();
            // One flat fp32 buffer per bucket: few large messages instead of one per tensor.
            var flat = cat(grads.Select(g => g.reshape(-1).to(ScalarType.Float32)).ToList()).contiguous(); // on the gradients' device: NCCL on GPUs
            group.AllReduce(flat);
            flat.div_(group.Size);
            long offset = 0;
            foreach (var g in grads)
            {
                g.copy_(flat.narrow(0, offset, g.numel()).view_as(g));
                offset += g.numel();
            }
        }
    }

    /// <summary>The mean of a per-rank number (a loss) over the group.</summary>
    public double Average(double value)
    {
        if (group.Size == 1) return value;
        using var t = tensor(new[] { value }, ScalarType.Float64);
        group.AllReduce(t);
        return t.item<double>() / group.Size;
    }

    /// <summary>Consecutive parameters grouped until a group holds about bucketBytes of gradient.</summary>
    private IEnumerable<List<Parameter>> Buckets(IReadOnlyList<Parameter> parameters)
    {
        var bucket = new List<Parameter>();
        long bytes = 0;
        foreach (var p in parameters)
        {
            bucket.Add(p);
            bytes += p.numel() * sizeof(float);
            if (bytes >= bucketBytes)
            {
                yield return bucket;
                bucket = [];
                bytes = 0;
            }
        }
        if (bucket.Count > 0) yield return bucket;
    }
}
