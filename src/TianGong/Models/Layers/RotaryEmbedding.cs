using System.Collections.Immutable;

namespace TianGong.Models.Layers;

/// <summary>
/// Rotary settings as Hugging Face writes them: v5 puts everything in <c>rope_parameters</c> (with <c>rope_theta</c>);
/// v4 wrote <c>rope_theta</c> at the top level and the scaling in <c>rope_scaling</c>, sometimes naming the kind
/// <c>type</c> instead of <c>rope_type</c>. One record reads both sections; fields a kind does not use stay null.
/// </summary>
public sealed record RopeParameters(
    double? RopeTheta = null,
    string? RopeType = null,
    string? Type = null,
    double? Factor = null,
    double? LowFreqFactor = null,
    double? HighFreqFactor = null,
    int? OriginalMaxPositionEmbeddings = null,
    double? AttentionFactor = null,
    double? BetaFast = null,
    double? BetaSlow = null,
    double? Mscale = null,
    double? MscaleAllDim = null,
    bool? Truncate = null)
{
    public static readonly ImmutableArray<string> SupportedTypes = ["default", "linear", "dynamic", "llama3", "yarn"];

    /// <summary>The scaling kind, as transformers resolves it: <c>rope_type</c>, else the legacy <c>type</c>, else default.</summary>
    [System.Text.Json.Serialization.JsonIgnore] public string Kind => RopeType ?? Type ?? "default";

    /// <summary>
    /// The rotary settings of a decoder config: theta from rope_parameters (v5) or rope_theta (v4), the scaling from
    /// whichever section names a kind. Section is the config key to name in errors.
    /// </summary>
    public static (RopeParameters Rope, string Section) Resolve(double? ropeTheta, RopeParameters? ropeParameters, RopeParameters? ropeScaling)
    {
        double theta = ropeParameters?.RopeTheta ?? ropeTheta ?? 10000.0;
        if (ropeParameters is { Kind: not "default" } || ropeScaling is null)
            return ((ropeParameters ?? new RopeParameters()) with { RopeTheta = theta }, "rope_parameters");
        return (ropeScaling with { RopeTheta = theta }, "rope_scaling");
    }

    /// <summary>Checks the fields the kind needs, as transformers' rope_config_validation does; errors name "section.field".</summary>
    public void Validate(string section)
    {
        ConfigChecks.InRange($"{section}.rope_theta", RopeTheta ?? 10000.0, 0, double.MaxValue, minInclusive: false);
        if (!SupportedTypes.Contains(Kind))
            throw new TianGongException($"{section}.rope_type: unsupported rotary scaling '{Kind}' (supported: {string.Join(", ", SupportedTypes)})");
        if (Kind == "default") return;
        var factor = Factor ?? throw new TianGongException($"{section}.factor: required for rope_type '{Kind}'");
        ConfigChecks.InRange($"{section}.factor", factor, 1, double.MaxValue);
        if (Kind == "llama3")
        {
            var low = LowFreqFactor ?? throw new TianGongException($"{section}.low_freq_factor: required for rope_type 'llama3'");
            var high = HighFreqFactor ?? throw new TianGongException($"{section}.high_freq_factor: required for rope_type 'llama3'");
            if (OriginalMaxPositionEmbeddings is null)
                throw new TianGongException($"{section}.original_max_position_embeddings: required for rope_type 'llama3'");
            if (!(high > low)) throw new TianGongException($"{section}.high_freq_factor: must be greater than low_freq_factor ({low}), got {high}");
        }
        if (OriginalMaxPositionEmbeddings is { } original) ConfigChecks.Positive($"{section}.original_max_position_embeddings", original);
        if (AttentionFactor is { } attention) ConfigChecks.InRange($"{section}.attention_factor", attention, 0, double.MaxValue, minInclusive: false);
        if (Kind == "yarn" && (BetaFast ?? 32) < (BetaSlow ?? 1))
            throw new TianGongException($"{section}.beta_fast: must be at least beta_slow ({BetaSlow ?? 1}), got {BetaFast}");
    }
}

/// <summary>
/// Rotary position tables (cos, sin) for every position up to the context length, computed once.
/// Uses the "rotate half" layout of HF Llama: frequencies are duplicated as [f0..f(d/2-1), f0..f(d/2-1)].
/// The inverse frequencies follow transformers' modeling_rope_utils.py, one named function per rope_type.
/// </summary>
public sealed class RotaryEmbedding : IDisposable
{
    private readonly Tensor cos; // (maxPositions, headDim), already multiplied by the attention scaling
    private readonly Tensor sin; // (maxPositions, headDim)
    private readonly RopeParameters rope;
    private readonly int headDim, maxPositionEmbeddings;

    public RotaryEmbedding(int headDim, int maxPositions, double theta) : this(headDim, maxPositions, new RopeParameters(theta)) { }

    public RotaryEmbedding(int headDim, int maxPositionEmbeddings, RopeParameters rope)
    {
        using var scope = NewDisposeScope();
        this.rope = rope;
        this.headDim = headDim;
        this.maxPositionEmbeddings = maxPositionEmbeddings;
        var (invFreq, scaling) = InverseFrequencies(rope, headDim, maxPositionEmbeddings, seqLen: null);
        (cos, sin) = Tables(invFreq, 0, maxPositionEmbeddings, scaling);
        cos.MoveToOuterDisposeScope();
        sin.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Positions the model accepts. Dynamic NTK exists to run past max_position_embeddings (tables are then
    /// recomputed per call), so it has no limit here; every other kind is bounded by its precomputed tables.
    /// </summary>
    public int MaxPositions => rope.Kind == "dynamic" ? int.MaxValue : maxPositionEmbeddings;

    public static int PositionLimit(RopeParameters rope, int maxPositionEmbeddings) =>
        rope.Kind == "dynamic" ? int.MaxValue : maxPositionEmbeddings;

    /// <summary>Rotates q or k, shaped (B, heads, T, headDim), at the positions of the call's attention context.</summary>
    public Tensor Apply(Tensor x, AttentionContext context) =>
        context.Start is { } start ? Apply(x, start) : Apply(x, context.Positions);

    /// <summary>Rotates q or k, shaped (B, heads, T, headDim), for positions start..start+T-1.</summary>
    public Tensor Apply(Tensor x, int start)
    {
        using var scope = NewDisposeScope();
        int t = (int)x.shape[2];
        Tensor c, s;
        if (start + t <= maxPositionEmbeddings)
        {
            c = cos.narrow(0, start, t);
            s = sin.narrow(0, start, t);
        }
        else
        {
            // Dynamic NTK past the trained length: frequencies for the whole sequence so far (start + T), as
            // transformers' dynamic_rope_update does each forward. Unlike transformers we do not keep the largest
            // length seen across calls, so a call's rotation depends only on its own positions.
            var (invFreq, scaling) = InverseFrequencies(rope, headDim, maxPositionEmbeddings, seqLen: start + t);
            (c, s) = Tables(invFreq, start, t, scaling);
        }
        c = c.to(x.dtype, x.device);
        s = s.to(x.dtype, x.device);
        return (x * c + RotateHalf(x) * s).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// inv_freq (d/2, float64) and the attention scaling that multiplies cos and sin, for a rope kind.
    /// seqLen matters only to dynamic NTK (null: the trained length, i.e. unscaled).
    /// </summary>
    public static (Tensor InvFreq, double AttentionScaling) InverseFrequencies(RopeParameters rope, int headDim, int maxPositionEmbeddings, int? seqLen)
    {
        double theta = rope.RopeTheta ?? 10000.0;
        double factor = rope.Factor ?? 1.0;
        switch (rope.Kind)
        {
            case "default":
                return (DefaultInvFreq(headDim, theta), 1.0);
            case "linear":
                return (LinearInvFreq(headDim, theta, factor), 1.0);
            case "dynamic":
                return (DynamicNtkInvFreq(headDim, theta, factor, maxPositionEmbeddings, seqLen ?? maxPositionEmbeddings), 1.0);
            case "llama3":
                return (Llama3InvFreq(headDim, theta, factor, rope.LowFreqFactor!.Value, rope.HighFreqFactor!.Value,
                    rope.OriginalMaxPositionEmbeddings!.Value), 1.0);
            case "yarn":
                // With original_max_position_embeddings given, transformers takes the factor from the two lengths
                // (DeepSeek-V3 and others stretch max_position_embeddings and keep the pretrained one there).
                int original = rope.OriginalMaxPositionEmbeddings ?? maxPositionEmbeddings;
                if (rope.OriginalMaxPositionEmbeddings is { } o) factor = (double)maxPositionEmbeddings / o;
                return (YarnInvFreq(headDim, theta, factor, original, rope.BetaFast ?? 32, rope.BetaSlow ?? 1, rope.Truncate ?? true),
                    rope.AttentionFactor ?? YarnAttentionFactor(factor, rope.Mscale, rope.MscaleAllDim));
            default:
                throw new TianGongException($"rope_type: unsupported rotary scaling '{rope.Kind}' (supported: {string.Join(", ", RopeParameters.SupportedTypes)})");
        }
    }

    /// <summary>1 / theta^(2i/d) for i in 0..d/2-1: the unscaled RoPE frequencies.</summary>
    public static Tensor DefaultInvFreq(int dim, double theta) =>
        1.0 / pow(tensor(theta, ScalarType.Float64, CPU), arange(0, dim, 2, dtype: ScalarType.Float64, device: CPU) / dim);

    /// <summary>Position interpolation: every frequency divided by the factor.</summary>
    public static Tensor LinearInvFreq(int dim, double theta, double factor) => DefaultInvFreq(dim, theta) / factor;

    /// <summary>
    /// Dynamic NTK (transformers' _compute_dynamic_ntk_parameters): for a sequence longer than the trained length,
    /// theta grows to theta · (factor·L/Lmax − (factor − 1))^(d/(d−2)); up to the trained length nothing changes.
    /// </summary>
    public static Tensor DynamicNtkInvFreq(int dim, double theta, double factor, int maxPositionEmbeddings, int seqLen)
    {
        double length = Math.Max(seqLen, maxPositionEmbeddings);
        double scaledTheta = theta * Math.Pow(factor * length / maxPositionEmbeddings - (factor - 1), (double)dim / (dim - 2));
        return DefaultInvFreq(dim, scaledTheta);
    }

    /// <summary>
    /// Llama 3.1 (transformers' _compute_llama3_parameters): wavelengths longer than original/low_freq_factor are
    /// divided by the factor, shorter than original/high_freq_factor kept, and the band between blended smoothly.
    /// </summary>
    public static Tensor Llama3InvFreq(int dim, double theta, double factor, double lowFreqFactor, double highFreqFactor, int originalMaxPositions)
    {
        using var scope = NewDisposeScope();
        var invFreq = DefaultInvFreq(dim, theta);
        double lowFreqWavelen = originalMaxPositions / lowFreqFactor;
        double highFreqWavelen = originalMaxPositions / highFreqFactor;
        var wavelen = 2 * Math.PI / invFreq;
        var scaled = where(wavelen > lowFreqWavelen, invFreq / factor, invFreq);
        var smooth = (originalMaxPositions / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
        var smoothed = (1 - smooth) * scaled / factor + smooth * scaled;
        var isMedium = (wavelen >= highFreqWavelen).logical_and(wavelen <= lowFreqWavelen);
        return where(isMedium, smoothed, scaled).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// YaRN (transformers' _compute_yarn_parameters): interpolated frequencies (÷ factor) for dimensions that rotate
    /// fewer than beta_slow times over the original length, extrapolated (unchanged) ones above beta_fast, a linear ramp between.
    /// </summary>
    public static Tensor YarnInvFreq(int dim, double theta, double factor, int originalMaxPositions, double betaFast, double betaSlow, bool truncate)
    {
        using var scope = NewDisposeScope();
        double CorrectionDim(double rotations) =>
            dim * Math.Log(originalMaxPositions / (rotations * 2 * Math.PI)) / (2 * Math.Log(theta));
        double low = CorrectionDim(betaFast), high = CorrectionDim(betaSlow);
        if (truncate) (low, high) = (Math.Floor(low), Math.Ceiling(high));
        (low, high) = (Math.Max(low, 0), Math.Min(high, dim - 1));
        if (low == high) high += 0.001; // avoids a division by zero in the ramp
        var ramp = ((arange(dim / 2, dtype: ScalarType.Float64, device: CPU) - low) / (high - low)).clamp(0, 1);
        var extrapolationFactor = 1 - ramp;
        var extrapolation = DefaultInvFreq(dim, theta);
        var interpolation = extrapolation / factor;
        return (interpolation * (1 - extrapolationFactor) + extrapolation * extrapolationFactor).MoveToOuterDisposeScope();
    }

    /// <summary>YaRN's attention scaling: 0.1·ln(factor)+1 (or the ratio of two such terms with mscale and mscale_all_dim).</summary>
    public static double YarnAttentionFactor(double factor, double? mscale, double? mscaleAllDim)
    {
        static double GetMscale(double scale, double m) => scale <= 1 ? 1.0 : 0.1 * m * Math.Log(scale) + 1.0;
        return mscale is { } m && m != 0 && mscaleAllDim is { } a && a != 0
            ? GetMscale(factor, m) / GetMscale(factor, a)
            : GetMscale(factor, 1);
    }

    private static (Tensor Cos, Tensor Sin) Tables(Tensor invFreq, int start, int count, double scaling)
    {
        var angles = outer(arange(start, start + count, dtype: ScalarType.Float64, device: CPU), invFreq); // (P, d/2)
        var emb = cat([angles, angles], dim: -1);
        return ((emb.cos() * scaling).to(ScalarType.Float32), (emb.sin() * scaling).to(ScalarType.Float32));
    }

    /// <summary>Rotates q or k, shaped (B, heads, T, headDim), each row at its own positions (B or 1, T).</summary>
    public Tensor Apply(Tensor x, Tensor positions)
    {
        using var scope = NewDisposeScope();
        var (b, t, d) = (positions.shape[0], positions.shape[1], x.shape[3]);
        var flat = positions.reshape(-1).to(cos.device);
        var (cosTable, sinTable) = (cos, sin);
        if (rope.Kind == "dynamic" && flat.max().item<long>() is var last && last >= maxPositionEmbeddings)
        {
            // Dynamic NTK past the trained length, as in Apply(x, start): frequencies for the sequence up to the last position.
            var (invFreq, scaling) = InverseFrequencies(rope, headDim, maxPositionEmbeddings, seqLen: (int)last + 1);
            (cosTable, sinTable) = Tables(invFreq, 0, (int)last + 1, scaling);
        }
        var c = cosTable.index_select(0, flat).view(b, 1, t, d).to(x.dtype, x.device);       // (B, 1, T, D)
        var s = sinTable.index_select(0, flat).view(b, 1, t, d).to(x.dtype, x.device);
        return (x * c + RotateHalf(x) * s).MoveToOuterDisposeScope();
    }

    private static Tensor RotateHalf(Tensor x)
    {
        long half = x.shape[^1] / 2;
        return cat([-x.narrow(-1, half, half), x.narrow(-1, 0, half)], dim: -1);
    }

    public void Dispose()
    {
        cos.Dispose();
        sin.Dispose();
    }
}
