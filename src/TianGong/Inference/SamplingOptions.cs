namespace TianGong.Inference;

/// <summary>
/// How the next token is chosen, with the meanings Hugging Face's generate() gives these names (presence and
/// frequency penalties as OpenAI's API defines them). A temperature below <see cref="GreedyBelow"/> is greedy
/// decoding; top_k 0 and top_p 1 switch those filters off. These are resolved values: defaults from
/// generation_config.json and overrides from flags or requests are merged by <see cref="GenerationConfig"/>.
/// </summary>
/// <param name="EosTokenIds">Tokens that end a sequence; null: the tokenizer's (or the model config's) eos.</param>
public sealed record SamplingOptions(
    int MaxNewTokens = 64,
    double Temperature = 1.0,
    int TopK = 0,
    double TopP = 1.0,
    double RepetitionPenalty = 1.0,
    IReadOnlyList<string>? StopStrings = null,
    long? Seed = null,
    bool StopAtEos = true,
    int MinNewTokens = 0,
    double PresencePenalty = 0,
    double FrequencyPenalty = 0,
    IReadOnlyList<int>? EosTokenIds = null)
{
    /// <summary>
    /// As vLLM's _SAMPLING_EPS: dividing logits by a smaller temperature overflows fp32 to inf and softmax to NaN,
    /// and the distribution is a point mass on the argmax long before that anyway.
    /// </summary>
    public const double GreedyBelow = 1e-5;

    public bool IsGreedy => Temperature < GreedyBelow;

    public void Validate()
    {
        Models.ConfigChecks.InRange("max_new_tokens", MaxNewTokens, 1, int.MaxValue);
        Models.ConfigChecks.InRange("min_new_tokens", MinNewTokens, 0, MaxNewTokens);
        Models.ConfigChecks.InRange("temperature", Temperature, 0, 100);
        Models.ConfigChecks.InRange("top_k", TopK, 0, int.MaxValue);
        Models.ConfigChecks.InRange("top_p", TopP, 0, 1, minInclusive: false);
        Models.ConfigChecks.InRange("repetition_penalty", RepetitionPenalty, 0, 100, minInclusive: false);
        Models.ConfigChecks.InRange("presence_penalty", PresencePenalty, -2, 2);
        Models.ConfigChecks.InRange("frequency_penalty", FrequencyPenalty, -2, 2);
        if (StopStrings?.Any(s => s.Length == 0) == true) throw new TianGongException("stop: stop strings must not be empty");
    }
}
