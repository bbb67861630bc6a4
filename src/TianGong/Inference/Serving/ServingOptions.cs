namespace TianGong.Inference.Serving;

/// <summary>
/// Limits of a serving engine. MaxBatch sequences decode together; each holds up to MaxContext positions
/// (0: the model's context length); at most MaxQueue requests wait for a slot, beyond that callers are turned away.
/// PrefillChunk is the most prompt tokens one scheduler iteration prefills (vLLM's chunked prefill, its
/// max_num_batched_tokens): a longer prompt, or several prompts admitted together, are prefilled over several
/// iterations, each followed by a decode step of the running sequences, so a long prompt does not stall them.
/// </summary>
public sealed record ServingOptions(int MaxBatch = 8, int MaxContext = 0, int MaxQueue = 64, int PrefillChunk = 512)
{
    public void Validate()
    {
        Models.ConfigChecks.InRange("max_batch", MaxBatch, 1, 1024);
        Models.ConfigChecks.InRange("max_context", MaxContext, 0, int.MaxValue);
        Models.ConfigChecks.InRange("max_queue", MaxQueue, 1, 1_000_000); // a request waits here even when a slot is free
        Models.ConfigChecks.InRange("prefill_chunk", PrefillChunk, 1, 1 << 20);
    }
}

/// <summary>
/// One sequence to generate, with OpenAI's sampling semantics: temperature 0 (below 1e-5) is greedy; presence and frequency
/// penalties are subtracted from the logits of tokens already generated; TopLogprobs null asks for no log-probabilities.
/// TopK, RepetitionPenalty, MinTokens and IgnoreEos are vLLM's extra parameters, with HF's meanings (0, 1, 0 and false switch
/// them off); IgnoreEos keeps generating past the end-of-sequence token (stop_token_ids still stop), as benchmarks need.
/// Adapter names one of the engine's LoRA adapters (null: the base model).
/// </summary>
public sealed record CompletionRequest(
    int[] PromptIds,
    int MaxTokens,
    double Temperature = 1.0,
    double TopP = 1.0,
    long? Seed = null,
    IReadOnlyList<string>? Stop = null,
    double PresencePenalty = 0,
    double FrequencyPenalty = 0,
    int? TopLogprobs = null,
    IReadOnlyList<int>? StopTokenIds = null,
    ITokenConstraint? Constraint = null,
    int TopK = 0,
    double RepetitionPenalty = 1.0,
    int MinTokens = 0,
    bool IgnoreEos = false,
    string? Adapter = null);

public sealed record TopLogprob(int TokenId, float Logprob);

/// <param name="Logprob">The token's log-probability; NaN when the request asked for no log-probabilities (it is not computed).</param>
/// <param name="Top">The most likely alternatives, or null when the request asked for no log-probabilities.</param>
public sealed record GeneratedToken(int TokenId, float Logprob, IReadOnlyList<TopLogprob>? Top);

/// <summary>
/// What one decode step produced for a request: text that is final (held back while it could still turn into a stop
/// string or an incomplete UTF-8 character), the tokens of the step, and the finish reason on the last chunk.
/// </summary>
public sealed record CompletionChunk(string Text, IReadOnlyList<GeneratedToken> Tokens, string? FinishReason, int PromptTokens, int CompletionTokens);

/// <summary>The engine cannot take the request now (queue full or shutting down); retrying later may succeed.</summary>
public sealed class EngineBusyException(string message) : TianGongException(message);
