using TianGong.Tokenizers;

namespace TianGong.Inference;

/// <summary>What one step chose for a sequence, and the finish reason when it was the last.</summary>
/// <param name="Appended">False for an end-of-sequence token: it ends the sequence and is not part of the output.</param>
/// <param name="Logprob">Log-probability of the token under the processed logits (before temperature), when asked for.</param>
public sealed record DecodeStep(int Token, bool Appended, string? FinishReason, float? Logprob = null, IReadOnlyList<(int TokenId, float Logprob)>? Top = null);

/// <summary>
/// The decoding core every generator shares (the CLI's <see cref="TextGenerator"/>, <see cref="Seq2SeqGenerator"/> and the
/// serving engine): one sequence's per-token work. Given the logits a model produced for it, it runs the logits processors,
/// samples with the sequence's own generator, and decides whether the sequence is finished (end-of-sequence,
/// constraint complete, stop string, length). The generators keep only the model calls and the batch bookkeeping,
/// and call <see cref="Step"/> once per live row; an error in one row (a constraint with nothing left, NaN logits)
/// is that row's exception and touches no other.
/// </summary>
public sealed class DecodingSequence : IDisposable
{
    private readonly List<int> generated = [];
    private readonly IReadOnlyList<ILogitsProcessor> processors;
    private readonly ITextTokenizer? tokenizer;
    private readonly ITokenConstraint? constraint;
    private readonly torch.Generator generator;

    /// <param name="vocabSize">The model's vocabulary (the logits' width): ids outside it are an error.</param>
    /// <param name="defaultEosIds">End-of-sequence ids when the options name none (the tokenizer's or the model's).</param>
    /// <param name="contextIds">The ids before the output that the repetition penalty counts: the prompt, or the decoder start.</param>
    public DecodingSequence(SamplingOptions options, int vocabSize, IEnumerable<int> defaultEosIds, ITextTokenizer? tokenizer,
        IReadOnlyList<int> contextIds, ITokenConstraint? constraint = null)
    {
        Options = options;
        this.tokenizer = tokenizer;
        this.constraint = constraint;
        ContextIds = contextIds;
        // An end id the model cannot produce (a tiny model under GPT-2's generation_config.json, say) can never end a
        // sequence: transformers keeps it and simply never meets it; so do we, without masking anything for it.
        EosIds = (options.EosTokenIds ?? defaultEosIds).Where(id => id >= 0 && id < vocabSize).ToHashSet();
        if (options.StopStrings is { Count: > 0 } && tokenizer is null) throw new TianGongException("generate: stop strings need a tokenizer");
        processors = LogitsProcessing.For(options, constraint, tokenizer?.VocabSize < vocabSize ? tokenizer.VocabSize : null);
        generator = new torch.Generator((ulong)(options.Seed ?? Random.Shared.NextInt64()));
    }

    public SamplingOptions Options { get; }

    public IReadOnlyList<int> ContextIds { get; }

    public IReadOnlySet<int> EosIds { get; }

    public IReadOnlyList<int> Generated => generated;

    public string? FinishReason { get; private set; }

    public bool IsFinished => FinishReason is not null;

    /// <summary>Where in the decoded text the first stop string begins (the text to return ends there), or null.</summary>
    public int? StopAt { get; private set; }

    /// <summary>Ids a caller hands in (prompts, sources) must name tokens of the model: a clear error instead of an index fault inside it.</summary>
    public static void CheckIds(IEnumerable<int> ids, int vocabSize, string what)
    {
        foreach (var id in ids)
            if (id < 0 || id >= vocabSize)
                throw new TianGongException($"{what}: token id {id} is outside the vocabulary [0, {vocabSize - 1}]");
    }

    /// <summary>
    /// Chooses the next token from this sequence's logits (V) and records it. With <paramref name="topLogprobs"/> ≥ 0 the
    /// step also reports the token's log-probability and that many most likely alternatives.
    /// </summary>
    public DecodeStep Step(Tensor logits, int topLogprobs = -1)
    {
        if (IsFinished) throw new InvalidOperationException("the sequence is finished");
        using var scope = NewDisposeScope();
        var row = logits.to(ScalarType.Float32).reshape(1, -1);                                // (1, V)
        foreach (var processor in processors) row = processor.Process(row, this);
        int token = LogitsProcessing.Sample(row, Options, generator);
        float? logprob = null;
        IReadOnlyList<(int, float)>? top = null;
        if (topLogprobs >= 0)
        {
            var logProbs = row[0].log_softmax(-1);
            logprob = logProbs[token].item<float>();
            if (topLogprobs > 0)
            {
                var (values, indices) = logProbs.topk(topLogprobs);
                var v = values.data<float>().ToArray();
                var ix = indices.data<long>().ToArray();
                top = [.. v.Select((lp, i) => ((int)ix[i], lp))];
            }
            else top = [];
        }
        return new DecodeStep(token, Accept(token), FinishReason, logprob, top);
    }

    /// <summary>Records a chosen token; returns false when it ended the sequence without becoming part of it (end-of-sequence).</summary>
    private bool Accept(int token)
    {
        if (Options.StopAtEos && EosIds.Contains(token))
        {
            FinishReason = "stop";
            return false;
        }
        generated.Add(token);
        if (constraint?.IsComplete(generated) == true) FinishReason = "stop";
        else if (FindStopString() is { } at) { StopAt = at; FinishReason = "stop"; }
        else if (generated.Count >= Options.MaxNewTokens) FinishReason = "length";
        return true;
    }

    /// <summary>Marks a sequence the caller stopped (its context is full): the finish reason is "length".</summary>
    public void EndForLength() => FinishReason ??= "length";

    /// <summary>The output as text: special tokens skipped, cut before the first stop string (OpenAI's API does not return it).</summary>
    public string Text()
    {
        var text = (tokenizer ?? throw new TianGongException("generate: text out needs a tokenizer")).Decode(generated.ToArray(), skipSpecialTokens: true);
        return StopAt is { } at ? text[..at] : text;
    }

    private int? FindStopString()
    {
        if (Options.StopStrings is not { Count: > 0 } stops) return null;
        var text = tokenizer!.Decode(generated.ToArray(), skipSpecialTokens: true);
        int? first = null;
        foreach (var stop in stops)
        {
            int at = text.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (first is null || at < first)) first = at;
        }
        return first;
    }

    public void Dispose() => generator.Dispose();
}
