using System.Diagnostics;
using TianGong.Parallelism.Communication;

namespace TianGong.Parallelism.Pipeline;

/// <summary>
/// Point-to-point traffic between neighbouring stages of one pipeline (Megatron's p2p_communication): activations go
/// forward to the next stage, their gradients back to the previous one. Stages are virtual stages: with v chunks per
/// rank, virtual stage k runs on rank k mod p, so the last rank's chunk c feeds the first rank's chunk c + 1 (with v = 1,
/// stage k is rank k). Sends are non-blocking and waited for at the end of the step, so no schedule can deadlock on two
/// stages sending to each other at once; receives block. Each receiving virtual stage has its own forward and backward
/// tag, and MPI keeps each tag's messages in order, so micro-batch i's tensors always meet micro-batch i's receive.
/// </summary>
public sealed class PipelineChannel(ICommunicator? group)
{
    private const int ForwardTag = 1000, BackwardTag = 1_000_000; // + the receiving virtual stage
    private readonly List<(ICommunicationRequest Request, Tensor Buffer)> inFlight = [];

    /// <summary>Time spent blocked in receives: the stage waiting for its neighbour (the pipeline bubble plus transfer time).</summary>
    public TimeSpan Waiting { get; private set; }

    /// <summary>The previous virtual stage's output for virtual stage <paramref name="stage"/>'s next micro-batch; it requires grad, so backward yields the gradient to send back.</summary>
    public Tensor ReceiveForward(long[] shape, ScalarType dtype, Device device, int stage) =>
        Receive(shape, dtype, device, RankOf(stage - 1), ForwardTag + stage).requires_grad_(true);

    /// <summary>Virtual stage <paramref name="stage"/>'s output, to the next virtual stage.</summary>
    public void SendForward(Tensor activation, int stage) => Send(activation, RankOf(stage + 1), ForwardTag + stage + 1);

    /// <summary>The gradient of the loss with respect to virtual stage <paramref name="stage"/>'s output for its oldest micro-batch still waiting for backward.</summary>
    public Tensor ReceiveBackward(long[] shape, ScalarType dtype, Device device, int stage) => Receive(shape, dtype, device, RankOf(stage + 1), BackwardTag + stage);

    /// <summary>The gradient of virtual stage <paramref name="stage"/>'s input, to the previous virtual stage.</summary>
    public void SendBackward(Tensor gradient, int stage) => Send(gradient, RankOf(stage - 1), BackwardTag + stage - 1);

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

    private int RankOf(int virtualStage) => virtualStage % Group.Size;

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
