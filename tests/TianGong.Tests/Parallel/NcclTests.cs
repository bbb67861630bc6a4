using System.Runtime.InteropServices;
using TianGong.Parallelism;
using TianGong.Parallelism.Communication;

namespace TianGong.Tests.Parallel;

/// <summary>
/// The parts of the NCCL communicator that run without a GPU: which engine and which GPU a rank gets, the one-line
/// errors without CUDA or libnccl, the dtype and operation codes of nccl.h, the unique-id framing and the tensor data
/// address. The collectives themselves run on GPUs only: bench/gpu.sh (gpu-nccl-check) checks them there.
/// </summary>
public class NcclTests
{
    [Fact]
    public void Gpu_jobs_use_nccl_and_cpu_jobs_mpi()
    {
        Assert.Equal(CommunicationEngine.Nccl, NcclCommunicator.Engine(new Device(DeviceType.CUDA, 1)));
        Assert.Equal(CommunicationEngine.Mpi, NcclCommunicator.Engine(CPU));
    }

    [Fact]
    public void A_bare_cuda_device_becomes_the_local_ranks_gpu()
    {
        // torch's Device has no value equality: compare what it prints.
        Assert.Equal("cuda:3", CudaDevices.RankDevice(new Device(DeviceType.CUDA), localRank: 3).ToString());
        Assert.Equal(DeviceType.CPU, CudaDevices.RankDevice(CPU, localRank: 3).type);
        Assert.Equal(-1, CudaDevices.RankDevice(new Device(DeviceType.CUDA), localRank: null).index); // one process: torch's default GPU
        Assert.Equal("cuda:1", CudaDevices.RankDevice(new Device(DeviceType.CUDA, 1), localRank: 0, localSize: 1).ToString()); // one rank per node
        var shared = Assert.Throws<TianGongException>(() => CudaDevices.RankDevice(new Device(DeviceType.CUDA, 0), localRank: 1, localSize: 2));
        Assert.Contains("with 2 ranks on this node would put them all on one GPU", shared.Message);
        Assert.Equal(4, CudaDevices.LocalSize(name => name == "OMPI_COMM_WORLD_LOCAL_SIZE" ? "4" : null));
        Assert.Equal(1, CudaDevices.LocalSize(_ => null));
    }

    [Fact]
    public void One_process_trains_on_the_device_it_was_given()
    {
        using (var alone = DistributedTraining.Start(new ParallelConfig(), device: new Device(DeviceType.CUDA)))
            Assert.Equal("cuda", alone.Device.ToString()); // outside a job nothing is chosen for it: torch's default GPU
        using (var cpu = DistributedTraining.Start(new ParallelConfig()))
            Assert.Equal(DeviceType.CPU, cpu.Device.type);
    }

    [Fact]
    public void The_local_rank_comes_from_open_mpi_or_slurm()
    {
        Assert.Equal(1, CudaDevices.LocalRank(name => name == "OMPI_COMM_WORLD_LOCAL_RANK" ? "1" : "5"));
        Assert.Equal(5, CudaDevices.LocalRank(name => name == "SLURM_LOCALID" ? "5" : null));
        Assert.Null(CudaDevices.LocalRank(_ => null));
        var error = Assert.Throws<TianGongException>(() => CudaDevices.LocalRank(_ => "x"));
        Assert.Contains("local rank is 'x'", error.Message);
    }

    [Fact]
    public void Missing_cuda_or_too_few_gpus_is_one_line()
    {
        var missing = Assert.Throws<TianGongException>(() => CudaDevices.Require(new Device(DeviceType.CUDA, 0), cudaAvailable: false, deviceCount: 0));
        Assert.Contains("CUDA is not available", missing.Message);
        Assert.Contains("-p:TorchBackend=cuda", missing.Message);
        var tooFew = Assert.Throws<TianGongException>(() => CudaDevices.Require(new Device(DeviceType.CUDA, 2), cudaAvailable: true, deviceCount: 2));
        Assert.Contains("this node has 2 GPU(s)", tooFew.Message);
        CudaDevices.Require(new Device(DeviceType.CUDA, 1), cudaAvailable: true, deviceCount: 2);
        CudaDevices.Require(CPU, cudaAvailable: false, deviceCount: 0);

        // This process's libtorch: the CPU build refuses, a CUDA build with a GPU accepts.
        var thrown = Record.Exception(() => CudaDevices.Require(new Device(DeviceType.CUDA, 0)));
        Assert.Equal(!cuda.is_available(), thrown is TianGongException);
    }

    [Fact]
    public void A_missing_nccl_library_says_how_to_install_it()
    {
        var error = Assert.Throws<TianGongException>(() => NcclLibrary.Open("libnccl-absent-for-this-test.so.2"));
        Assert.StartsWith("NCCL: cannot load libnccl-absent-for-this-test.so.2", error.Message);
        Assert.Contains("libnccl2", error.Message);
        Assert.DoesNotContain('\n', error.Message);
    }

    [Theory]
    [InlineData(ScalarType.Float32, 7)]
    [InlineData(ScalarType.BFloat16, 9)]
    [InlineData(ScalarType.Float16, 6)]
    [InlineData(ScalarType.Float64, 8)]
    [InlineData(ScalarType.Int64, 4)]
    [InlineData(ScalarType.Int32, 2)]
    [InlineData(ScalarType.Byte, 1)]
    [InlineData(ScalarType.Int8, 0)]
    public void Torch_dtypes_map_to_ncclDataType_t(ScalarType dtype, int code) => Assert.Equal(code, NcclLibrary.DataType(dtype));

    [Fact]
    public void Types_and_operations_without_an_nccl_code_are_refused()
    {
        Assert.Null(NcclLibrary.DataType(ScalarType.Bool));
        Assert.Null(NcclLibrary.DataType(ScalarType.ComplexFloat32));
        Assert.Equal(0, NcclLibrary.Operation(ReduceOp.Sum)); // ncclSum
        Assert.Equal(2, NcclLibrary.Operation(ReduceOp.Max)); // ncclMax
        Assert.Throws<ArgumentOutOfRangeException>(() => NcclLibrary.Operation((ReduceOp)7));
    }

    [Theory]
    [InlineData(22703, "2.27.3")]
    [InlineData(21805, "2.18.5")]
    [InlineData(2708, "2.7.8")] // before 2.9 the code was major·1000 + minor·100 + patch
    public void Version_codes_read_as_nccl_writes_them(int code, string text) => Assert.Equal(text, NcclLibrary.VersionText(code));

    [Fact]
    public void The_unique_id_reaches_every_rank_as_its_128_bytes()
    {
        var made = new byte[NcclLibrary.UniqueIdBytes];
        new Random(7).NextBytes(made);
        byte[]? sent = null;
        int broadcasts = 0;
        // Rank 0 of two: its id goes out as a 128-byte uint8 CPU tensor from root 0.
        var atRoot = NcclUniqueId.Share(rank: 0, root: 0, () => NcclUniqueId.FromBytes(made), (wire, root) =>
        {
            Assert.Equal(ScalarType.Byte, wire.dtype);
            Assert.Equal(DeviceType.CPU, wire.device_type);
            Assert.Equal(0, root);
            sent = wire.bytes.ToArray();
            broadcasts++;
        });
        Assert.Equal(made, sent);
        Assert.Equal(made, atRoot.ToBytes());

        // Rank 1: never makes an id, takes what the broadcast wrote.
        var atOther = NcclUniqueId.Share(rank: 1, root: 0, () => throw new InvalidOperationException("only the root makes the id"), (wire, root) =>
        {
            Assert.All(wire.bytes.ToArray(), b => Assert.Equal(0, b)); // nothing of its own goes out
            sent!.CopyTo(wire.bytes);
            broadcasts++;
        });
        Assert.Equal(made, atOther.ToBytes());
        Assert.Equal(2, broadcasts);
        Assert.Throws<TianGongException>(() => NcclUniqueId.FromBytes(new byte[127]));
    }

    [Fact]
    public void The_data_pointer_is_the_first_element_of_the_tensor_or_view()
    {
        using var whole = arange(10, ScalarType.Float32);
        using var view = whole.narrow(0, 3, 4); // a view at element offset 3
        nint address = TensorMemory.DataPointer(view);
        Assert.Equal(TensorMemory.DataPointer(whole) + 3 * sizeof(float), address);
        Assert.Equal(3f, BitConverter.Int32BitsToSingle(Marshal.ReadInt32(address)));
        Marshal.WriteInt32(address, BitConverter.SingleToInt32Bits(-1f)); // what NCCL writes there lands in the tensor
        Assert.Equal(-1f, whole[3].item<float>());
        using var nothing = zeros(0);
        Assert.Equal(0, TensorMemory.DataPointer(nothing));
    }
}
