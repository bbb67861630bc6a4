namespace TianGong.Parallelism.Communication;

/// <summary>
/// <see cref="ICommunicator"/> over Open MPI (through <see cref="MpiLibrary"/>), on contiguous CPU tensors: MPI reads
/// and writes the tensor's own memory. Start the job's communicator with <see cref="InitWorld"/>; derive the
/// groups with <see cref="Split"/>.
/// </summary>
public sealed unsafe class MpiCommunicator : ICommunicator
{
    private readonly MpiLibrary mpi;
    private nint comm;
    private readonly bool ownsHandle;
    private readonly CollectiveWatchdog watchdog;
    private readonly string name;
    private long bytesSent;

    private MpiCommunicator(MpiLibrary mpi, nint comm, bool ownsHandle, CollectiveWatchdog watchdog, string name, int worldRank)
    {
        this.mpi = mpi;
        this.comm = comm;
        this.ownsHandle = ownsHandle;
        this.watchdog = watchdog;
        this.name = name;
        int rank, size;
        mpi.Check(mpi.Comm_rank(comm, &rank), "MPI_Comm_rank");
        mpi.Check(mpi.Comm_size(comm, &size), "MPI_Comm_size");
        Rank = rank;
        Size = size;
        WorldRank = worldRank < 0 ? rank : worldRank;
    }

    /// <summary>
    /// Initialises MPI (once per process) and returns MPI_COMM_WORLD. A collective or transfer that has not finished
    /// after <paramref name="timeout"/> aborts the whole job with a message naming this rank and the call.
    /// Disposing the world communicator finalises MPI.
    /// </summary>
    public static MpiCommunicator InitWorld(TimeSpan timeout)
    {
        var mpi = MpiLibrary.Shared;
        int initialized;
        mpi.Check(mpi.Initialized(&initialized), "MPI_Initialized");
        if (initialized == 0)
        {
            int provided;
            // Funneled: only the training thread calls MPI; the watchdog thread calls nothing but MPI_Abort, as a last resort.
            mpi.Check(mpi.Init_thread(null, null, MpiLibrary.ThreadFunneled, &provided), "MPI_Init_thread");
        }
        var watchdog = new CollectiveWatchdog(timeout, mpi);
        var world = new MpiCommunicator(mpi, mpi.CommWorld, ownsHandle: false, watchdog, "world", -1);
        watchdog.Start(world.Rank);
        return world;
    }

    /// <summary>True when this process was started by Open MPI's mpirun, or by Slurm's srun with PMIx (--mpi=pmix): it is one rank of a job.</summary>
    public static bool LaunchedByMpi =>
        Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_SIZE") is not null || Environment.GetEnvironmentVariable("PMIX_RANK") is not null;

    public int Rank { get; }
    public int Size { get; }
    public int WorldRank { get; }
    public long BytesSent => Interlocked.Read(ref bytesSent);

    public void AllReduce(Tensor tensor, ReduceOp op = ReduceOp.Sum)
    {
        var (ptr, count, type) = Buffer(tensor, nameof(tensor));
        using var _ = watchdog.Track($"all-reduce on the {name} group");
        Count(tensor);
        mpi.Check(mpi.Allreduce(MpiLibrary.InPlace, ptr, count, type, op == ReduceOp.Sum ? mpi.OpSum : mpi.OpMax, comm), "MPI_Allreduce");
    }

    public void Broadcast(Tensor tensor, int root)
    {
        var (ptr, count, type) = Buffer(tensor, nameof(tensor));
        using var _ = watchdog.Track($"broadcast on the {name} group");
        if (Rank == root) Count(tensor);
        mpi.Check(mpi.Bcast(ptr, count, type, root, comm), "MPI_Bcast");
    }

    public void AllGather(Tensor input, Tensor output)
    {
        var (src, count, type) = Buffer(input, nameof(input));
        var (dst, outCount, _) = Buffer(output, nameof(output));
        CheckChunks(outCount, count, "all-gather");
        using var _w = watchdog.Track($"all-gather on the {name} group");
        Count(input);
        mpi.Check(mpi.Allgather(src, count, type, dst, count, type, comm), "MPI_Allgather");
    }

    public void ReduceScatter(Tensor input, Tensor output)
    {
        var (src, inCount, type) = Buffer(input, nameof(input));
        var (dst, count, _) = Buffer(output, nameof(output));
        CheckChunks(inCount, count, "reduce-scatter");
        using var _w = watchdog.Track($"reduce-scatter on the {name} group");
        Count(input);
        mpi.Check(mpi.Reduce_scatter_block(src, dst, count, type, mpi.OpSum, comm), "MPI_Reduce_scatter_block");
    }

    public void AllToAll(Tensor input, Tensor output)
    {
        var (src, inCount, type) = Buffer(input, nameof(input));
        var (dst, outCount, _) = Buffer(output, nameof(output));
        if (inCount != outCount || inCount % Size != 0)
            throw new ArgumentException($"all-to-all needs input and output of the same size, a multiple of the group size {Size}; got {inCount} and {outCount} elements");
        using var _w = watchdog.Track($"all-to-all on the {name} group");
        Count(input);
        mpi.Check(mpi.Alltoall(src, inCount / Size, type, dst, inCount / Size, type, comm), "MPI_Alltoall");
    }

    public void Send(Tensor tensor, int destination, int tag = 0)
    {
        var (ptr, count, type) = Buffer(tensor, nameof(tensor));
        using var _ = watchdog.Track($"send to rank {destination} of the {name} group");
        Count(tensor);
        mpi.Check(mpi.Send(ptr, count, type, destination, tag, comm), "MPI_Send");
    }

    public void Receive(Tensor tensor, int source, int tag = 0)
    {
        var (ptr, count, type) = Buffer(tensor, nameof(tensor));
        using var _ = watchdog.Track($"receive from rank {source} of the {name} group");
        MpiStatus status;
        mpi.Check(mpi.Recv(ptr, count, type, source, tag, comm, &status), "MPI_Recv");
    }

    public ICommunicationRequest SendAsync(Tensor tensor, int destination, int tag = 0)
    {
        var (ptr, count, type) = Buffer(tensor, nameof(tensor));
        Count(tensor);
        nint request;
        mpi.Check(mpi.Isend(ptr, count, type, destination, tag, comm, &request), "MPI_Isend");
        return new Request(this, request, tensor, $"send to rank {destination} of the {name} group");
    }

    public ICommunicationRequest ReceiveAsync(Tensor tensor, int source, int tag = 0)
    {
        var (ptr, count, type) = Buffer(tensor, nameof(tensor));
        nint request;
        mpi.Check(mpi.Irecv(ptr, count, type, source, tag, comm, &request), "MPI_Irecv");
        return new Request(this, request, tensor, $"receive from rank {source} of the {name} group");
    }

    public void Barrier()
    {
        using var _ = watchdog.Track($"barrier on the {name} group");
        mpi.Check(mpi.Barrier(comm), "MPI_Barrier");
    }

    public void Barrier(TimeSpan limit)
    {
        using var _ = watchdog.Track($"barrier on the {name} group", limit);
        mpi.Check(mpi.Barrier(comm), "MPI_Barrier");
    }

    public ICommunicator Split(int color, int key) => Split(color, key, $"{name}/{color}");

    ICommunicator ICommunicator.Split(int color, int key, string groupName) => Split(color, key, groupName);

    /// <summary>As <see cref="Split(int, int)"/>, with a name for messages (the dimension: "data-parallel", "tensor-parallel").</summary>
    public MpiCommunicator Split(int color, int key, string groupName)
    {
        nint child;
        using (watchdog.Track($"split of the {name} group"))
            mpi.Check(mpi.Comm_split(comm, color, key, &child), "MPI_Comm_split");
        return new MpiCommunicator(mpi, child, ownsHandle: true, watchdog, groupName, WorldRank);
    }

    public void Abort(int exitCode) => mpi.Abort(comm, exitCode);

    public void Dispose()
    {
        if (comm == 0) return;
        if (ownsHandle)
        {
            int finalized;
            mpi.Finalized(&finalized);
            if (finalized == 0)
            {
                nint handle = comm;
                mpi.Comm_free(&handle);
            }
        }
        else if (comm == mpi.CommWorld)
        {
            watchdog.Dispose();
            int finalized;
            mpi.Finalized(&finalized);
            if (finalized == 0) mpi.Finalize();
        }
        comm = 0;
    }

    /// <summary>The tensor's memory as MPI sees it: address, element count, datatype.</summary>
    private (nint Ptr, int Count, nint Type) Buffer(Tensor t, string what)
    {
        if (comm == 0) throw new ObjectDisposedException(nameof(MpiCommunicator));
        if (t.device_type != DeviceType.CPU)
            throw new ArgumentException($"{what}: the MPI communicator moves CPU tensors; this one is on {t.device}", what);
        if (!t.is_contiguous()) throw new ArgumentException($"{what}: must be contiguous", what);
        if (t.numel() > int.MaxValue) throw new ArgumentException($"{what}: {t.numel()} elements exceed one MPI call's count (split it into buckets)", what);
        nint type = t.dtype switch
        {
            ScalarType.Float32 => mpi.Float,
            ScalarType.Float64 => mpi.Double,
            ScalarType.Int32 => mpi.Int,
            ScalarType.Int64 => mpi.Long,
            ScalarType.Byte => mpi.Byte,
            _ => throw new ArgumentException($"{what}: the MPI communicator has no datatype for {t.dtype}", what),
        };
        if (t.numel() == 0) return (0, 0, type);
        // Tensor.bytes is a span over the tensor's native memory (a CPU tensor never moves), so its address is the data pointer.
        fixed (byte* p = t.bytes) return ((nint)p, (int)t.numel(), type);
    }

    private void Count(Tensor t) => Interlocked.Add(ref bytesSent, t.numel() * t.element_size());

    private void CheckChunks(long whole, long chunk, string what)
    {
        if (whole != chunk * Size)
            throw new ArgumentException($"{what}: the whole tensor must have group size ({Size}) × chunk elements; got {whole} and {chunk}");
    }

    private sealed class Request(MpiCommunicator owner, nint handle, Tensor keepAlive, string description) : ICommunicationRequest
    {
        private nint handle = handle;

        public void Wait()
        {
            if (handle == 0) return;
            GC.KeepAlive(keepAlive);
            using var _ = owner.watchdog.Track(description);
            MpiStatus status;
            nint h = handle;
            owner.mpi.Check(owner.mpi.Wait(&h, &status), "MPI_Wait");
            handle = 0; // MPI_Wait sets the request to MPI_REQUEST_NULL
        }
    }
}
