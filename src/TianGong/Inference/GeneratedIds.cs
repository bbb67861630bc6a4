namespace TianGong.Inference;

/// <summary>
/// What a generator produced for one prompt or source, as ids: the output (an end-of-sequence token that ended it is not
/// part of it) and why it ended ("stop" or "length").
/// </summary>
public sealed record GeneratedIds(int[] Generated, string FinishReason)
{
    /// <summary>The result of a finished sequence of the decoding core.</summary>
    public static GeneratedIds Of(DecodingSequence sequence) => new([.. sequence.Generated], sequence.FinishReason!);
}
