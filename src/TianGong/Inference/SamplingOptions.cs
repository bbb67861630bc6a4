namespace TianGong.Inference;

/// <summary>
/// How the next token is chosen, with the meanings Hugging Face's generate() gives these names.
/// Temperature 0 is greedy decoding; top_k 0 and top_p 1 switch those filters off.
/// </summary>
public sealed record SamplingOptions(
    int MaxNewTokens = 64,
    double Temperature = 1.0,
    int TopK = 0,
    double TopP = 1.0,
    double RepetitionPenalty = 1.0,
    IReadOnlyList<string>? StopStrings = null,
    long? Seed = null,
    bool StopAtEos = true,
    int MinNewTokens = 0)
{
    public void Validate()
    {
        Models.ConfigChecks.InRange("max_new_tokens", MaxNewTokens, 1, int.MaxValue);
        Models.ConfigChecks.InRange("min_new_tokens", MinNewTokens, 0, MaxNewTokens);
        Models.ConfigChecks.InRange("temperature", Temperature, 0, 100);
        Models.ConfigChecks.InRange("top_k", TopK, 0, int.MaxValue);
        Models.ConfigChecks.InRange("top_p", TopP, 0, 1, minInclusive: false);
        Models.ConfigChecks.InRange("repetition_penalty", RepetitionPenalty, 0, 100, minInclusive: false);
    }
}
