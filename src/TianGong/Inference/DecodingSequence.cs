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
    // The generator's state, read once at the first sampled step and advanced here from then on: nothing else draws from
    // this generator, and a get_state and set_state per step cost about 10 µs a row (as much as sampling the row at a
    // 16k vocabulary). The draws are libtorch's own (LibtorchCpuDraws), so a seed chooses what it chose before.
    private LibtorchCpuDraws? draws;
    private readonly IncrementalDetokenizer? detokenizer; // the text so far, O(window) per token (stop strings, streaming)
    private readonly int longestStop;
    private int streamed;                                 // chars of the text handed out by NextText

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
        // Only a vocabulary limit (the same for every row of a batch) can run batched; other processors see their own row.
        batchable = processors.All(p => p is LogitsProcessing.VocabularyLimit);
        vocabLimit = processors.OfType<LogitsProcessing.VocabularyLimit>().FirstOrDefault()?.TokenizerVocab;
        generator = new torch.Generator((ulong)(options.Seed ?? Random.Shared.NextInt64()));
        if (tokenizer is not null) detokenizer = new IncrementalDetokenizer(tokenizer);
        longestStop = options.StopStrings is { Count: > 0 } stops ? stops.Max(s => s.Length) : 0;
    }

    private readonly bool batchable;
    private readonly int? vocabLimit;

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
        int token = Options.IsGreedy ? LogitsProcessing.Sample(row, Options, generator) : LogitsProcessing.Sample(row, Options, Draws());
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

    /// <summary>
    /// <see cref="Step"/> for every row of a batch's (B, V) logits; null rows (finished, cancelled) are skipped. Rows that
    /// need nothing but sampling (no penalties, constraint or min_new_tokens, no log-probabilities) are grouped by their
    /// sampling options and each group is sampled in one set of ops (<see cref="LogitsProcessing.SampleRows"/>), each row
    /// still with its own generator, so it chooses what <see cref="Step"/> chooses; the others take <see cref="Step"/>.
    /// A row's error (NaN logits, a constraint with nothing left) is returned for that row and touches no other.
    /// </summary>
    /// <param name="topLogprobs">Per row, as <see cref="Step"/>'s argument; null: none for any row.</param>
    public static (DecodeStep? Step, Exception? Error)[] StepRows(IReadOnlyList<DecodingSequence?> rows, Tensor logits, IReadOnlyList<int>? topLogprobs = null)
    {
        var results = new (DecodeStep? Step, Exception? Error)[rows.Count];
        using var scope = NewDisposeScope();
        var groups = new Dictionary<(bool Greedy, double Temperature, int TopK, double TopP, int? Limit), List<int>>();
        for (int b = 0; b < rows.Count; b++)
        {
            var s = rows[b];
            if (s is null) continue;
            int top = topLogprobs?[b] ?? -1;
            if (s.IsFinished) results[b] = (null, new InvalidOperationException("the sequence is finished"));
            else if (!s.batchable || top >= 0)
            {
                try { results[b] = (s.Step(logits[b], top), null); }
                catch (Exception e) { results[b] = (null, e); }
            }
            else
            {
                var o = s.Options;
                var key = o.IsGreedy ? (true, 0.0, 0, 1.0, s.vocabLimit) : (false, o.Temperature, o.TopK, o.TopP, s.vocabLimit);
                if (!groups.TryGetValue(key, out var list)) groups[key] = list = [];
                list.Add(b);
            }
        }
        foreach (var (key, members) in groups)
        {
            try
            {
                var group = members.Count == rows.Count ? logits : logits.index_select(0, tensor(members.Select(b => (long)b).ToArray(), device: logits.device));
                if (group.dtype != ScalarType.Float32) group = group.to(ScalarType.Float32);     // (G, V); no op after a pass when it is fp32
                var sampled = LogitsProcessing.SampleRows(group, rows[members[0]]!.Options,
                    key.Greedy ? [] : [.. members.Select(b => rows[b]!.Draws())], key.Limit);
                for (int i = 0; i < members.Count; i++)
                {
                    var s = rows[members[i]]!;
                    results[members[i]] = sampled[i].Error is { } error ? (null, error)
                        : (new DecodeStep(sampled[i].Token, s.Accept(sampled[i].Token), s.FinishReason), null);
                }
            }
            catch (Exception e)
            {
                foreach (int b in members) results[b] = (null, e); // libtorch failed on the group's ops: those rows fail
            }
        }
        return results;
    }

    private LibtorchCpuDraws Draws() => draws ??= LibtorchCpuDraws.Read(generator)
        ?? throw new InvalidOperationException("sampling: this libtorch's CPU generator state is not laid out as libtorch's CPUGeneratorImplState");

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

    /// <summary>The output as text: special tokens skipped, cut before the first stop string (OpenAI's API does not return it).</summary>
    public string Text()
    {
        var text = (tokenizer ?? throw new TianGongException("generate: text out needs a tokenizer")).Decode(generated.ToArray(), skipSpecialTokens: true);
        return StopAt is { } at ? text[..Math.Min(at, text.Length)] : text;
    }

    /// <summary>
    /// The text that became final since the last call, for streaming: decoded incrementally (no full decode per token),
    /// without an incomplete character at the end and without text that may be the start of a stop string (it waits for
    /// the next token). Once the sequence is finished it returns the rest of <see cref="Text"/>, so the pieces put together
    /// are exactly <see cref="Text"/>.
    /// </summary>
    public string NextText()
    {
        var detok = detokenizer ?? throw new TianGongException("generate: text out needs a tokenizer");
        string delta;
        if (IsFinished)
        {
            var text = Text();
            delta = text.Length > streamed ? text[streamed..] : "";
        }
        else
        {
            CatchUp();
            int safe = detok.Stable.Length;
            foreach (var stop in Options.StopStrings ?? [])
                for (int k = Math.Min(stop.Length - 1, safe - streamed); k > 0; k--)
                    if (EndsWith(detok.Stable, safe, stop.AsSpan(0, k))) { safe -= k; break; }
            delta = safe > streamed ? detok.Stable.ToString(streamed, safe - streamed) : "";
        }
        streamed += delta.Length;
        return delta;
    }

    private static bool EndsWith(System.Text.StringBuilder text, int end, ReadOnlySpan<char> value)
    {
        if (value.Length > end) return false;
        for (int i = 0; i < value.Length; i++)
            if (text[end - value.Length + i] != value[i]) return false;
        return true;
    }

    /// <summary>Feeds the incremental detokenizer the tokens it has not seen.</summary>
    private void CatchUp()
    {
        if (detokenizer!.Count < generated.Count)
            detokenizer.Add(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(generated)[detokenizer.Count..]);
    }

    /// <summary>
    /// Where the first stop string begins in the text. Text before the last token was searched already, so only the new text
    /// and the (longest stop − 1) chars before it can hold a first match.
    /// </summary>
    private int? FindStopString()
    {
        if (Options.StopStrings is not { Count: > 0 } stops) return null;
        var detok = detokenizer!;
        int searchedUpTo = detok.Stable.Length;          // stable text before this token was searched (with what was pending then)
        CatchUp();
        int from = Math.Max(0, searchedUpTo - (longestStop - 1));
        string window = detok.Stable.ToString(from, detok.Stable.Length - from) + detok.Pending;
        int? first = null;
        foreach (var stop in stops)
        {
            int at = window.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (first is null || at < first)) first = at;
        }
        return first + from;
    }

    public void Dispose() => generator.Dispose();
}
