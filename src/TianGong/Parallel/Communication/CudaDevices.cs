namespace TianGong.Parallelism.Communication;

/// <summary>
/// Which GPU a rank uses and what NCCL needs to know about a CUDA tensor: one GPU per local rank (the rank's index
/// on its node, from Open MPI's or Slurm's environment), a clear error where CUDA is missing, and a tensor's device
/// address, which TorchSharp keeps internal.
/// </summary>
public static class CudaDevices
{
    /// <summary>
    /// The device this rank trains on: <c>cuda</c> without an index becomes <c>cuda:(local rank)</c> in a parallel job, so the
    /// ranks of a node take one GPU each; an explicit <c>cuda:N</c> (one rank per node) and the CPU are kept as given.
    /// </summary>
    /// <param name="localSize">Ranks on this node: an explicit <c>cuda:N</c> for several would put them all on one GPU, which NCCL refuses.</param>
    public static Device RankDevice(Device requested, int? localRank, int localSize = 1)
    {
        if (requested.type != DeviceType.CUDA || localRank is not { } local) return requested;
        if (requested.index < 0) return new Device(DeviceType.CUDA, local);
        if (localSize > 1)
            throw new TianGongException($"--device {requested} with {localSize} ranks on this node would put them all on one GPU; " +
                                        "pass --device cuda and each rank takes cuda:(its local rank)");
        return requested;
    }

    /// <summary>How many ranks of the job run on this node (Open MPI's OMPI_COMM_WORLD_LOCAL_SIZE); 1 when not known.</summary>
    public static int LocalSize(Func<string, string?>? environment = null) =>
        int.TryParse((environment ?? Environment.GetEnvironmentVariable)("OMPI_COMM_WORLD_LOCAL_SIZE"), out int size) && size > 0 ? size : 1;

    /// <summary>This process's index among the ranks on its node (Open MPI's OMPI_COMM_WORLD_LOCAL_RANK, Slurm's SLURM_LOCALID); null outside a job.</summary>
    public static int? LocalRank(Func<string, string?>? environment = null)
    {
        environment ??= Environment.GetEnvironmentVariable;
        var text = environment("OMPI_COMM_WORLD_LOCAL_RANK") ?? environment("SLURM_LOCALID");
        if (text is null) return null;
        return int.TryParse(text, out int rank) && rank >= 0 ? rank
            : throw new TianGongException($"the job's local rank is '{text}' (OMPI_COMM_WORLD_LOCAL_RANK / SLURM_LOCALID): expected a number >= 0");
    }

    /// <summary>Throws one line when <paramref name="device"/> cannot be used: CUDA missing (CPU build or no driver), or a GPU index the node lacks.</summary>
    public static void Require(Device device, bool cudaAvailable, int deviceCount)
    {
        if (device.type != DeviceType.CUDA) return;
        if (!cudaAvailable)
            throw new TianGongException($"--device {device}: CUDA is not available here (TianGong built with the CPU TorchSharp package, or no NVIDIA GPU and driver); " +
                                        "on a GPU machine build with dotnet build -p:TorchBackend=cuda (bench/gpu.sh does)");
        if (device.index >= deviceCount)
            throw new TianGongException($"--device {device}: this node has {deviceCount} GPU(s) (cuda:0 to cuda:{deviceCount - 1}); start at most {deviceCount} ranks per node");
    }

    /// <summary>As <see cref="Require(Device, bool, int)"/> for this process's libtorch.</summary>
    public static void Require(Device device)
    {
        if (device.type != DeviceType.CUDA) return;
        bool available = cuda.is_available();
        Require(device, available, available ? cuda.device_count() : 0);
    }
}
