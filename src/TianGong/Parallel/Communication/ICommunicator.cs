namespace TianGong.Parallelism.Communication;

/// <summary>
/// A group of processes that exchange tensors: the one interface the parallel layers, the data-parallel gradient
/// sync and the pipeline schedules talk to. <see cref="MpiCommunicator"/> implements it over Open MPI for CPU
/// processes on one or many nodes; a GPU engine (NCCL) would be a second implementation of the same calls.
/// </summary>
/// <remarks>
/// Every tensor argument must be contiguous and live on the communicator's device; collectives work in place
/// on the tensor's own memory (no copy through managed arrays). Every member of the group must make the same
/// collective calls in the same order, as in MPI and NCCL.
/// </remarks>
public interface ICommunicator : IDisposable
{
    /// <summary>This process's index in the group, 0 to <see cref="Size"/> - 1.</summary>
    int Rank { get; }

    int Size { get; }

    /// <summary>The rank of this process in the whole job, for messages that name a process.</summary>
    int WorldRank { get; }

    /// <summary>Bytes this process has handed to the engine so far (sends and collective inputs), for the communication-volume benchmark.</summary>
    long BytesSent { get; }

    /// <summary>Replaces <paramref name="tensor"/> with the element-wise sum (or max) over the group.</summary>
    void AllReduce(Tensor tensor, ReduceOp op = ReduceOp.Sum);

    /// <summary>Copies <paramref name="tensor"/> of rank <paramref name="root"/> into every other rank's.</summary>
    void Broadcast(Tensor tensor, int root);

    /// <summary>Concatenates every rank's <paramref name="input"/> along the first dimension into <paramref name="output"/> (Size × input elements).</summary>
    void AllGather(Tensor input, Tensor output);

    /// <summary>Sums <paramref name="input"/> (Size equal chunks) over the group; rank r receives the sum of chunk r in <paramref name="output"/>.</summary>
    void ReduceScatter(Tensor input, Tensor output);

    /// <summary>Chunk j of <paramref name="input"/> (Size equal chunks) goes to rank j, arriving as chunk (this rank) of its <paramref name="output"/>.</summary>
    void AllToAll(Tensor input, Tensor output);

    void Send(Tensor tensor, int destination, int tag = 0);

    void Receive(Tensor tensor, int source, int tag = 0);

    /// <summary>Starts a send and returns at once; the tensor must not change until the request is waited for.</summary>
    ICommunicationRequest SendAsync(Tensor tensor, int destination, int tag = 0);

    /// <summary>Starts a receive into <paramref name="tensor"/>; its contents are defined once the request is waited for.</summary>
    ICommunicationRequest ReceiveAsync(Tensor tensor, int source, int tag = 0);

    void Barrier();

    /// <summary>A barrier with its own limit instead of the collective timeout (<see cref="Timeout.InfiniteTimeSpan"/>: none), for waits of known length such as rank 0 preparing data.</summary>
    void Barrier(TimeSpan limit);

    /// <summary>
    /// A new communicator per <paramref name="color"/>: the ranks that pass the same color, ordered by <paramref name="key"/>.
    /// Every rank of this group must call it.
    /// </summary>
    ICommunicator Split(int color, int key);

    /// <summary>As <see cref="Split(int, int)"/>, with a name for messages (the dimension: "data-parallel", "tensor-parallel").</summary>
    ICommunicator Split(int color, int key, string groupName);

    /// <summary>Ends every process of the job with <paramref name="exitCode"/>: the way out when one rank fails or hangs.</summary>
    void Abort(int exitCode);
}

public enum ReduceOp
{
    Sum,
    Max,
}

/// <summary>A send or receive in flight.</summary>
public interface ICommunicationRequest
{
    /// <summary>Blocks until the transfer is complete (subject to the collective timeout).</summary>
    void Wait();
}
