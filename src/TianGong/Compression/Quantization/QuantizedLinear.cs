using TianGong.Models.Layers;

namespace TianGong.Compression.Quantization;

/// <summary>
/// A linear layer whose weight is stored as GPTQ integers (see <see cref="GptqPacking"/>): the module transformers'
/// GPTQ QuantLinear is, with the same keys (<c>q_proj.qweight</c>, <c>q_proj.qzeros</c>, <c>q_proj.scales</c>,
/// <c>q_proj.g_idx</c>, <c>q_proj.bias</c>), put in a linear layer's place by <see cref="LayerReplacement"/>. GPT-2's
/// Conv1D becomes the same module (the weight is transposed before quantizing, as optimum does). It is not an
/// <see cref="ILinearLayer"/>: there is no float weight to hand out, so a quantized model cannot be quantized again
/// or get LoRA layers on its quantized projections.
/// </summary>
public sealed class QuantizedLinear : nn.Module<Tensor, Tensor>
{
    // Not readonly: loading replaces these through their fields (MetaModel) or copies into them.
    private Tensor qweight;
    private Tensor qzeros;
    private Tensor scales;
    private Tensor g_idx;
    private Tensor? bias;

    public long InFeatures { get; }
    public long OutFeatures { get; }
    public GptqConfig Config { get; }

    // Kernel tables derived from the buffers, rebuilt when loading replaces them; never part of the state dict.
    private QuantizedGemv? gemv;

    /// <summary>An empty layer of the right shapes, on the original's device, for a checkpoint to be read into.</summary>
    public QuantizedLinear(LinearParts original, GptqConfig config) : base(nameof(QuantizedLinear))
    {
        (InFeatures, OutFeatures, Config) = (original.InFeatures, original.OutFeatures, config);
        var device = original.Weight.device;
        int pack = config.PackFactor;
        long groups = GptqPacking.GroupCount(InFeatures, config.GroupSizeFor(InFeatures));
        CheckShapes(InFeatures, OutFeatures, config);
        qweight = zeros(InFeatures / pack, OutFeatures, ScalarType.Int32, device);
        qzeros = zeros(groups, OutFeatures / pack, ScalarType.Int32, device);
        scales = zeros(groups, OutFeatures, original.Weight.dtype, device);
        g_idx = zeros(InFeatures, ScalarType.Int32, device);
        bias = original.Bias is null ? null : zeros(OutFeatures, original.Bias.dtype, device);
        RegisterComponents();
    }

    /// <summary>Quantizes <paramref name="original"/>'s weight by round-to-nearest.</summary>
    public static QuantizedLinear Rtn(LinearParts original, GptqConfig config)
    {
        CheckShapes(original.InFeatures, original.OutFeatures, config);
        float[] w;
        using (NewDisposeScope())
            w = (original.FanInFanOut ? original.Weight.t() : original.Weight).detach().to(ScalarType.Float32).contiguous().data<float>().ToArray();
        return FromWeight(original, QuantizedWeight.Rtn(w, original.InFeatures, original.OutFeatures, config));
    }

    /// <summary>A layer holding <paramref name="weight"/> (and the original's bias).</summary>
    public static QuantizedLinear FromWeight(LinearParts original, QuantizedWeight weight)
    {
        var layer = new QuantizedLinear(original, weight.Config);
        using var _ = no_grad();
        using (NewDisposeScope())
        {
            layer.qweight.copy_(tensor(weight.QWeight).view(layer.qweight.shape));
            layer.qzeros.copy_(tensor(weight.QZeros).view(layer.qzeros.shape));
            layer.scales.copy_(tensor(weight.Scales.Select(h => (float)h).ToArray()).view(layer.scales.shape));
            layer.g_idx.copy_(tensor(weight.GIdx));
            if (original.Bias is { } b) layer.bias!.copy_(b);
        }
        return layer;
    }

    /// <summary>The packed tensors as they are now, for tests and exporters.</summary>
    public (Tensor QWeight, Tensor QZeros, Tensor Scales, Tensor GIdx, Tensor? Bias) Buffers => (qweight, qzeros, scales, g_idx, bias);

    private static void CheckShapes(long inFeatures, long outFeatures, GptqConfig config)
    {
        int pack = config.PackFactor;
        if (inFeatures % pack != 0 || outFeatures % pack != 0)
            throw new TianGongException($"a {inFeatures}→{outFeatures} linear layer cannot be stored in {config.Bits}-bit GPTQ format: both sizes must be multiples of {pack}");
    }

    public override Tensor forward(Tensor x)
    {
        if (x.device_type == DeviceType.CPU)
            gemv = QuantizedGemv.For(gemv, qweight, qzeros, scales, g_idx, InFeatures, OutFeatures, Config);
        if (gemv is not null && gemv.Multiplies(x)) return gemv.Apply(x, bias);
        using var scope = NewDisposeScope();
        var y = x.matmul(gemv is not null && x.device_type == DeviceType.CPU ? gemv.Dequantize(x.dtype) : DequantizedWeight(x.dtype));
        if (bias is not null) y = y + bias.to(y.dtype);
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>The weight these integers stand for, (in, out) as GPTQ lays it out: scales[g] · (q − zero[g]).</summary>
    public Tensor DequantizedWeight(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        int bits = Config.Bits, pack = Config.PackFactor;
        var shifts = arange(0, 32, bits, ScalarType.Int32, qweight.device);
        var q = qweight.unsqueeze(1).bitwise_right_shift(shifts.view(1, pack, 1)).bitwise_and(Config.MaxQ).reshape(InFeatures, OutFeatures);
        var z = qzeros.unsqueeze(2).bitwise_right_shift(shifts.view(1, 1, pack)).bitwise_and(Config.MaxQ).add(1).bitwise_and(Config.MaxQ)
            .reshape(qzeros.shape[0], OutFeatures);
        var groups = g_idx.to(ScalarType.Int64);
        var w = (q - z.index_select(0, groups)).to(ScalarType.Float32) * scales.to(ScalarType.Float32).index_select(0, groups);
        return w.to(dtype).MoveToOuterDisposeScope();
    }
}
