using TianGong.Models.Layers;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Inference.Offload;

/// <summary>
/// A projection of a streamed decoder layer. Its weight is a view of the memory-mapped safetensors file with no page
/// resident; before computing it asks the <see cref="LayerStreamer"/> to bring its layer in (which also releases the
/// layer before and prefetches the next). It keeps the wrapped layer's <c>weight</c>/<c>bias</c> keys, so it is put in
/// by <see cref="LayerReplacement"/> like a LoRA or quantized layer and no family file knows about it.
/// </summary>
internal sealed class StreamedLinear : LinearWrapper
{
    private readonly LayerStreamer streamer;
    private readonly int layer;

    public StreamedLinear(LinearParts original, LayerStreamer streamer, int layer) : base(nameof(StreamedLinear), original)
    {
        (this.streamer, this.layer) = (streamer, layer);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        streamer.Enter(layer);
        var parts = Parts;
        if (parts.Weight.dtype == x.dtype) return parts.Apply(x);
        // The file's dtype differs from the one the model runs in: a converted copy lives for this call only.
        using var scope = NewDisposeScope();
        var w = parts.Weight.to(x.dtype);
        if (!parts.FanInFanOut) return F.linear(x, w, parts.Bias).MoveToOuterDisposeScope();
        var flat = x.reshape(-1, x.shape[^1]);
        var y = parts.Bias is null ? flat.matmul(w) : addmm(parts.Bias, flat, w, beta: 1, alpha: 1);
        return y.view([.. x.shape[..^1], parts.OutFeatures]).MoveToOuterDisposeScope();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) streamer.Dispose(); // shared by the layer's projections; waits for a prefetch in flight
        base.Dispose(disposing);
    }
}
