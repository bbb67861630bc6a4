using System.Diagnostics;
using TianGong.Parallelism.Communication;

namespace TianGong.Parallelism.Pipeline;

/// <summary>
/// Point-to-point traffic between neighbouring stages of one pipeline (Megatron's p2p_communication): activations go
/// forward to the next stage, their gradients back to the previous one. Sends are non-blocking and waited for at the
/// end of the step, so no schedule can deadlock on two stages sending to each other at once; receives block. Forward
/// and backward messages have their own tags, and MPI keeps each tag's messages in order, so micro-batch i's tensors
/// always meet micro-batch i's receive.
/// </summary>
public sealed class PipelineChannel(ICommunicator? group)
{
    private const int ForwardTag = 11, BackwardTag = 12;
    private readonly List<(ICommunicationRequest Request, Tensor Buffer)> inFlight = [];

    /// <summary>Time spent blocked in receives: the stage waiting for its neighbour (the pipeline bubble plus transfer time).</summary>
    public TimeSpan Waiting { get; private set; }

    public int Stage => group?.Rank ?? 0;
    public int Stages => group?.Size ?? 1;

    /// <summary>The previous stage's output for the next micro-batch; it requires grad, so backward yields the gradient to send back.</summary>
    public Tensor ReceiveForward(long[] shape, ScalarType dtype, Device device) =>
        Receive(shape, dtype, device, Stage - 1, ForwardTag).requires_grad_(true);

    public void SendForward(Tensor activation) => Send(activation, Stage + 1, ForwardTag);

    /// <summary>The gradient of the loss with respect to this stage's output for the oldest micro-batch still waiting for backward.</summary>
    public Tensor ReceiveBackward(long[] shape, ScalarType dtype, Device device) => Receive(shape, dtype, device, Stage + 1, BackwardTag);

    public void SendBackward(Tensor gradient) => Send(gradient, Stage - 1, BackwardTag);

    /// <summary>Waits for every send of the step; their buffers are then released.</summary>
    public void Flush()
    {
        foreach (var (request, buffer) in inFlight)
        {
            request.Wait();
            buffer.Dispose();
        }
        inFlight.Clear();
    }

    // A one-stage pipeline (recomputation in one process) has no neighbours and never gets here.
    private ICommunicator Group => group ?? throw new InvalidOperationException("a one-stage pipeline has no neighbour to talk to");

    private void Send(Tensor t, int destination, int tag)
    {
        // Its own CPU copy, out of every dispose scope: MPI reads it until the request completes.
        var buffer = t.detach().to(CPU).contiguous().clone().DetachFromDisposeScope();
        inFlight.Add((Group.SendAsync(buffer, destination, tag), buffer));
    }

    private Tensor Receive(long[] shape, ScalarType dtype, Device device, int source, int tag)
    {
        var buffer = empty(shape, dtype, CPU);
        long start = Stopwatch.GetTimestamp();
        Group.Receive(buffer, source, tag);
        Waiting += Stopwatch.GetElapsedTime(start);
        return device.type == DeviceType.CPU ? buffer : buffer.to(device);
    }
}
