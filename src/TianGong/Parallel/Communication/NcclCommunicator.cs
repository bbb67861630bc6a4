namespace TianGong.Parallelism.Communication;

/// <summary>
/// <see cref="ICommunicator"/> for a job whose ranks each drive one GPU: CUDA tensors move through NVIDIA's NCCL, in place
/// on the tensor's device memory and on the default CUDA stream (the one libtorch runs on, since TorchSharp exposes no
/// streams), so they are ordered with the kernels that made them. CPU tensors (a loss to average, a flag, checkpoint
/// staging) go through the MPI communicator of the same ranks, as PyTorch pairs NCCL with Gloo. The NCCL communicator
/// is bootstrapped over MPI: rank 0 makes the unique id and broadcasts its 128 bytes.
/// </summary>
/// <remarks>
/// <para>NOT YET RUN ON A GPU: no GPU was lent while this was written; <c>bench/gpu.sh</c> runs <see cref="CollectiveCheck"/> on GPU tensors and a
/// 2-GPU data-parallel job on the first machine with two GPUs. What ran here: the errors without libnccl or CUDA, the
/// device choice, the dtype and operation mapping and the unique-id framing (tests/TianGong.Tests/Parallel/NcclTests.cs).</para>
/// <para>Each call returns when its result is in place: after queuing it waits on a CUDA event, polling NCCL for
/// asynchronous errors, and past the collective timeout aborts the NCCL communicator (ncclCommAbort frees the
/// waiting kernels) and then the job, with a line naming the rank and the call. Sends and receives started with
/// <see cref="SendAsync"/>/<see cref="ReceiveAsync"/> are queued and issued together in one NCCL group at the next
/// wait or call (as torch's batch_isend_irecv does), so a ring of sends and receives cannot deadlock. NCCL has no
/// message tags: between two ranks, messages arrive in the order they were posted, and the tag is ignored.</para>
/// </remarks>
public sealed unsafe class NcclCommunicator : ICommunicator
{
    private readonly NcclLibrary nccl;
    private readonly CudaDriver driver;
    private readonly MpiCommunicator host; // the same ranks over MPI: CPU tensors, barriers, abort, bootstrap
    private readonly nint context;         // the GPU's primary CUDA context
    private readonly nint done;            // CUDA event recorded after each call, polled until it completes
    private readonly TimeSpan timeout;
    private readonly string name;
    private readonly List<Transfer> queued = [];
    private nint comm;
    private long bytesSent;

    private NcclCommunicator(NcclLibrary nccl, CudaDriver driver, MpiCommunicator host, nint comm, nint context, Device device, TimeSpan timeout, string name)
    {
        this.nccl = nccl;
        this.driver = driver;
        this.host = host;
        this.comm = comm;
        this.context = context;
        this.timeout = timeout;
        this.name = name;
        Device = device;
        done = driver.CreateEvent();
    }

    /// <summary>
    /// The communicator for a job on <paramref name="device"/>: <paramref name="world"/> itself on the CPU, NCCL over the same ranks on a
    /// GPU (each rank passes its own, <see cref="CudaDevices.RankDevice"/>). Every rank must call it.
    /// </summary>
    public static ICommunicator ForDevice(MpiCommunicator world, Device device, TimeSpan timeout) =>
        Engine(device) == CommunicationEngine.Nccl ? Create(world, device, timeout) : world;

    /// <summary>Which engine moves a job's tensors: NCCL when the ranks train on GPUs, MPI otherwise.</summary>
    public static CommunicationEngine Engine(Device device) => device.type == DeviceType.CUDA ? CommunicationEngine.Nccl : CommunicationEngine.Mpi;

    /// <summary>Starts NCCL over the ranks of <paramref name="world"/>, on GPU <paramref name="device"/>; the new communicator owns <paramref name="world"/>.</summary>
    public static NcclCommunicator Create(MpiCommunicator world, Device device, TimeSpan timeout)
    {
        if (device.type != DeviceType.CUDA || device.index < 0)
            throw new ArgumentException($"NCCL needs a GPU with its index (cuda:N), got {device}", nameof(device));
        CudaDevices.Require(device);
        var nccl = NcclLibrary.Shared;
        var driver = CudaDriver.Shared;
        nint context = driver.MakeCurrent(device.index);
        var id = NcclUniqueId.Share(world.Rank, 0, () => NewUniqueId(nccl), world.Broadcast);
        nint comm;
        nccl.Check(nccl.CommInitRank(&comm, world.Size, id, world.Rank), "ncclCommInitRank");
        return new NcclCommunicator(nccl, driver, world, comm, context, device, timeout, "world");
    }

    /// <summary>"NCCL 2.27.3 on cuda:1": for the job's first lines.</summary>
    public string Describe() => $"NCCL {NcclLibrary.VersionText(nccl.Version)} on {Device}";

    public Device Device { get; }
    public int Rank => host.Rank;
    public int Size => host.Size;
    public int WorldRank => host.WorldRank;
    public long BytesSent => Interlocked.Read(ref bytesSent) + host.BytesSent;

    public void AllReduce(Tensor tensor, ReduceOp op = ReduceOp.Sum)
    {
        if (OnHost(tensor)) { host.AllReduce(tensor, op); return; }
        var (ptr, count, type) = Buffer(tensor, nameof(tensor));
        Run($"all-reduce on the {name} group", tensor, () => nccl.AllReduce(ptr, ptr, count, type, NcclLibrary.Operation(op), comm, 0), "ncclAllReduce");
    }

    public void Broadcast(Tensor tensor, int root)
    {
        if (OnHost(tensor)) { host.Broadcast(tensor, root); return; }
        var (ptr, count, type) = Buffer(tensor, nameof(tensor));
        Run($"broadcast on the {name} group", Rank == root ? tensor : null, () => nccl.Broadcast(ptr, ptr, count, type, root, comm, 0), "ncclBroadcast");
    }

    public void AllGather(Tensor input, Tensor output)
    {
        if (OnHost(input, output)) { host.AllGather(input, output); return; }
        var (src, count, type) = Buffer(input, nameof(input));
        var (dst, outCount, _) = Buffer(output, nameof(output));
        CheckChunks(outCount, count, "all-gather");
        Run($"all-gather on the {name} group", input, () => nccl.AllGather(src, dst, count, type, comm, 0), "ncclAllGather");
    }

    public void ReduceScatter(Tensor input, Tensor output)
    {
        if (OnHost(input, output)) { host.ReduceScatter(input, output); return; }
        var (src, inCount, type) = Buffer(input, nameof(input));
        var (dst, count, _) = Buffer(output, nameof(output));
        CheckChunks(inCount, count, "reduce-scatter");
        Run($"reduce-scatter on the {name} group", input, () => nccl.ReduceScatter(src, dst, count, type, NcclLibrary.Operation(ReduceOp.Sum), comm, 0), "ncclReduceScatter");
    }

    /// <summary>One send and one receive per rank inside a group: NCCL's all-to-all (ncclAlltoAll exists only in the newest releases).</summary>
    public void AllToAll(Tensor input, Tensor output)
    {
        if (OnHost(input, output)) { host.AllToAll(input, output); return; }
        var (src, inCount, type) = Buffer(input, nameof(input));
        var (dst, outCount, _) = Buffer(output, nameof(output));
        if (inCount != outCount || inCount % (nuint)Size != 0)
            throw new ArgumentException($"all-to-all needs input and output of the same size, a multiple of the group size {Size}; got {inCount} and {outCount} elements");
        nuint chunk = inCount / (nuint)Size;
        nint chunkBytes = (nint)chunk * (nint)input.element_size();
        Run($"all-to-all on the {name} group", input, () =>
        {
            nccl.Check(nccl.GroupStart(), "ncclGroupStart");
            for (int peer = 0; peer < Size; peer++)
            {
                nccl.Check(nccl.Send(src + peer * chunkBytes, chunk, type, peer, comm, 0), "ncclSend");
                nccl.Check(nccl.Recv(dst + peer * chunkBytes, chunk, type, peer, comm, 0), "ncclRecv");
            }
            return nccl.GroupEnd();
        }, "ncclGroupEnd");
    }

    public void Send(Tensor tensor, int destination, int tag = 0)
    {
        if (OnHost(tensor)) { host.Send(tensor, destination, tag); return; }
        SendAsync(tensor, destination, tag).Wait();
    }

    public void Receive(Tensor tensor, int source, int tag = 0)
    {
        if (OnHost(tensor)) { host.Receive(tensor, source, tag); return; }
        ReceiveAsync(tensor, source, tag).Wait();
    }

    public ICommunicationRequest SendAsync(Tensor tensor, int destination, int tag = 0)
    {
        if (OnHost(tensor)) return host.SendAsync(tensor, destination, tag);
        return Queue(new Transfer(tensor, destination, Outgoing: true, Buffer(tensor, nameof(tensor))), $"send to rank {destination} of the {name} group");
    }

    public ICommunicationRequest ReceiveAsync(Tensor tensor, int source, int tag = 0)
    {
        if (OnHost(tensor)) return host.ReceiveAsync(tensor, source, tag);
        return Queue(new Transfer(tensor, source, Outgoing: false, Buffer(tensor, nameof(tensor))), $"receive from rank {source} of the {name} group");
    }

    /// <summary>Waits for this rank's GPU work on the communicator, then meets the other ranks (over MPI).</summary>
    public void Barrier()
    {
        Run($"barrier on the {name} group", null, null, "");
        host.Barrier();
    }

    public void Barrier(TimeSpan limit)
    {
        Run($"barrier on the {name} group", null, null, "");
        host.Barrier(limit);
    }

    public ICommunicator Split(int color, int key) => Split(color, key, $"{name}/{color}");

    /// <summary>
    /// The MPI group of <paramref name="color"/> and, over the same ranks, an NCCL communicator: ncclCommSplit where the
    /// library has it (NCCL 2.18 and newer), otherwise a new unique id shared over the new MPI group.
    /// </summary>
    public ICommunicator Split(int color, int key, string groupName)
    {
        FlushQueued();
        var child = host.Split(color, key, groupName);
        try
        {
            driver.SetCurrent(context);
            nint childComm;
            if (nccl.CommSplit is not null)
                nccl.Check(nccl.CommSplit(comm, color, key, &childComm, 0), "ncclCommSplit");
            else
            {
                var id = NcclUniqueId.Share(child.Rank, 0, () => NewUniqueId(nccl), child.Broadcast);
                nccl.Check(nccl.CommInitRank(&childComm, child.Size, id, child.Rank), "ncclCommInitRank");
            }
            return new NcclCommunicator(nccl, driver, child, childComm, context, Device, timeout, groupName);
        }
        catch
        {
            child.Dispose();
            throw;
        }
    }

    /// <summary>Aborts the NCCL communicator (its kernels stop waiting), then ends every process of the job through MPI.</summary>
    public void Abort(int exitCode)
    {
        if (comm != 0) nccl.CommAbort(comm);
        comm = 0;
        host.Abort(exitCode);
    }

    public void Dispose()
    {
        if (comm != 0)
        {
            FlushQueued();
            driver.SetCurrent(context);
            nccl.CommDestroy(comm);
            comm = 0;
            driver.DestroyEvent(done);
        }
        host.Dispose();
    }

    private static NcclUniqueId NewUniqueId(NcclLibrary nccl)
    {
        NcclUniqueId id;
        nccl.Check(nccl.GetUniqueId(&id), "ncclGetUniqueId");
        return id;
    }

    /// <summary>True when every tensor is on the CPU (the MPI side); false when all are on this communicator's GPU; mixed or another GPU is an error.</summary>
    private bool OnHost(params Tensor[] tensors)
    {
        if (tensors.All(t => t.device_type == DeviceType.CPU)) return true;
        foreach (var t in tensors)
            if (t.device_type != DeviceType.CUDA || t.device_index != Device.index)
                throw new ArgumentException($"the NCCL communicator on {Device} moves tensors on {Device} (or CPU tensors over MPI); got one on {t.device}");
        return false;
    }

    /// <summary>The tensor's device memory as NCCL sees it: address, element count, ncclDataType_t.</summary>
    private (nint Ptr, nuint Count, int Type) Buffer(Tensor t, string what)
    {
        if (comm == 0) throw new ObjectDisposedException(nameof(NcclCommunicator));
        if (!t.is_contiguous()) throw new ArgumentException($"{what}: must be contiguous", what);
        int type = NcclLibrary.DataType(t.dtype) ?? throw new ArgumentException($"{what}: NCCL has no datatype for {t.dtype}", what);
        return (TensorMemory.DataPointer(t), (nuint)t.numel(), type);
    }

    private void CheckChunks(nuint whole, nuint chunk, string what)
    {
        if (whole != chunk * (nuint)Size)
            throw new ArgumentException($"{what}: the whole tensor must have group size ({Size}) × chunk elements; got {whole} and {chunk}");
    }

    /// <summary>Queues <paramref name="enqueue"/> (after any queued sends and receives) on the default stream and waits for it.</summary>
    private void Run(string what, Tensor? counted, Func<int>? enqueue, string call)
    {
        driver.SetCurrent(context); // the calling thread may not be the one that created the communicator
        FlushQueued();
        if (enqueue is not null)
        {
            if (counted is not null) Interlocked.Add(ref bytesSent, counted.numel() * counted.element_size());
            nccl.Check(enqueue(), call);
        }
        WaitForStream(what);
    }

    private Request Queue(Transfer transfer, string what)
    {
        queued.Add(transfer);
        if (transfer.Outgoing) Interlocked.Add(ref bytesSent, transfer.Tensor.numel() * transfer.Tensor.element_size());
        return new Request(this, transfer, what);
    }

    /// <summary>Issues the queued sends and receives as one NCCL group (ncclGroupStart ... ncclGroupEnd).</summary>
    private void FlushQueued()
    {
        if (queued.Count == 0) return;
        driver.SetCurrent(context);
        nccl.Check(nccl.GroupStart(), "ncclGroupStart");
        foreach (var t in queued)
        {
            var (ptr, count, type) = t.Memory;
            nccl.Check(t.Outgoing ? nccl.Send(ptr, count, type, t.Peer, comm, 0) : nccl.Recv(ptr, count, type, t.Peer, comm, 0), t.Outgoing ? "ncclSend" : "ncclRecv");
        }
        queued.Clear();
        nccl.Check(nccl.GroupEnd(), "ncclGroupEnd");
    }

    /// <summary>Polls an event recorded after the queued work: done, an asynchronous NCCL error (a peer failed), or the timeout.</summary>
    private void WaitForStream(string what)
    {
        driver.RecordOnDefaultStream(done);
        long start = Environment.TickCount64;
        for (int polls = 0; !driver.HasCompleted(done); polls++)
        {
            int error;
            nccl.Check(nccl.CommGetAsyncError(comm, &error), "ncclCommGetAsyncError");
            if (error != NcclLibrary.Success && error != NcclLibrary.InProgress)
                Fail($"{what} failed: {nccl.ErrorText(error)} (a peer rank died or its network failed)");
            if (timeout != Timeout.InfiniteTimeSpan && Environment.TickCount64 - start > timeout.TotalMilliseconds)
                Fail($"{what} did not finish within {timeout.TotalSeconds:0.#} s (parallel.timeout_s): another rank died or hangs");
            // Small collectives finish in microseconds: spin first, then yield the core.
            if (polls < 2000) Thread.SpinWait(50);
            else Thread.Sleep(1);
        }
    }

    /// <summary>The watchdog's way out, as the MPI side does: one line naming the rank (the launcher reads it), abort NCCL, end the job.</summary>
    private void Fail(string message)
    {
        Console.Error.WriteLine($"error: rank {WorldRank}: {message}; ending the job");
        Console.Error.Flush();
        Abort(3);
        Environment.Exit(3); // MPI_Abort does not return; this is for an MPI that lets it
    }

    private sealed record Transfer(Tensor Tensor, int Peer, bool Outgoing, (nint Ptr, nuint Count, int Type) Memory);

    private sealed class Request(NcclCommunicator owner, Transfer transfer, string what) : ICommunicationRequest
    {
        private bool finished;

        public void Wait()
        {
            if (finished) return;
            owner.Run(what, null, null, ""); // issues the queued group (this transfer among them) and waits for the stream
            GC.KeepAlive(transfer.Tensor);
            finished = true;
        }
    }
}

/// <summary>The engine behind a job's communicator.</summary>
public enum CommunicationEngine
{
    /// <summary>Open MPI: CPU tensors, one or many nodes.</summary>
    Mpi,

    /// <summary>NVIDIA NCCL: CUDA tensors, one GPU per rank (CPU tensors still through MPI).</summary>
    Nccl,
}
