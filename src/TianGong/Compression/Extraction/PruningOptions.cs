namespace TianGong.Compression.Extraction;

/// <summary>
/// Width pruning asked of <c>tiangong extract</c>: the fraction of attention heads (<c>--heads-keep</c>) and of MLP
/// channels (<c>--mlp-keep</c>) each layer keeps, ranked by importance measured on the text of <c>--calibration</c>.
/// </summary>
public sealed record PruningOptions(double? HeadsKeep, double? MlpKeep, string? CalibrationFile)
{
    /// <summary>Calibration sequences of this many tokens (or the model's context, when shorter)...</summary>
    public int SequenceLength { get; init; } = 128;

    /// <summary>...and at most this many of them: importance ranks settle after a few thousand tokens.</summary>
    public int MaxSequences { get; init; } = 32;

    public bool PrunesAnything => HeadsKeep is not null || MlpKeep is not null;

    /// <summary>Checks the fractions (0 &lt; F ≤ 1) and that calibration text is given when anything is pruned.</summary>
    public void Validate()
    {
        CheckFraction("--heads-keep", HeadsKeep);
        CheckFraction("--mlp-keep", MlpKeep);
        if (PrunesAnything && CalibrationFile is null)
            throw new TianGongException("--heads-keep/--mlp-keep: give --calibration FILE (text the importance of heads and channels is measured on)");
        if (PrunesAnything && !File.Exists(CalibrationFile))
            throw new TianGongException($"--calibration: {CalibrationFile} not found");
    }

    private static void CheckFraction(string option, double? value)
    {
        if (value is { } f && !(f > 0 && f <= 1))
            throw new TianGongException($"{option}: must be a fraction in (0, 1], got {f}");
    }

    /// <summary>round(F·n), halves up: how many of n units a fraction keeps.</summary>
    internal static int Keep(double fraction, int n) => (int)Math.Round(fraction * n, MidpointRounding.AwayFromZero);
}
