namespace TianGong.Inference;

/// <summary>
/// One step of a logits pipeline, as vLLM's and HF's logits processors: it sees one sequence's (1, V) fp32 logits
/// and what that sequence has generated, and returns new logits. <see cref="DecodingSequence"/> runs the list
/// that <see cref="LogitsProcessing.For"/> builds from the options, then samples.
/// </summary>
public interface ILogitsProcessor
{
    Tensor Process(Tensor logits, DecodingSequence sequence);
}

/// <summary>The logits transforms of sampling, each on (B, V) fp32 logits, in the order HF applies them, and the processors built on them.</summary>
public static class LogitsProcessing
{
    /// <summary>The processors the options switch on, in HF's order: penalties, min_new_tokens, then the constraint mask.</summary>
    public static IReadOnlyList<ILogitsProcessor> For(SamplingOptions options, ITokenConstraint? constraint, int? tokenizerVocab)
    {
        var list = new List<ILogitsProcessor>();
        if (tokenizerVocab is { } v) list.Add(new VocabularyLimit(v));
        if (options.RepetitionPenalty != 1.0) list.Add(new RepetitionPenalty(options.RepetitionPenalty));
        if (options.PresencePenalty != 0 || options.FrequencyPenalty != 0) list.Add(new PresenceFrequencyPenalty(options.PresencePenalty, options.FrequencyPenalty));
        if (options.MinNewTokens > 0) list.Add(new MinNewTokens(options.MinNewTokens));
        if (constraint is not null) list.Add(new ConstraintMask(constraint));
        return list;
    }

    /// <summary>CTRL's repetition penalty: logits of tokens already in the sequence are divided (if positive) or multiplied (if negative) by the penalty.</summary>
    public static Tensor ApplyRepetitionPenalty(Tensor logits, Tensor previousIds, double penalty)
    {
        if (penalty == 1.0) return logits;
        var seen = logits.gather(1, previousIds);
        var penalized = where(seen > 0, seen / penalty, seen * penalty);
        return logits.scatter(1, previousIds, penalized);
    }

    public static Tensor ApplyTopK(Tensor logits, int k)
    {
        if (k <= 0 || k >= logits.shape[^1]) return logits;
        var kth = logits.topk(k, dim: -1).values.narrow(-1, k - 1, 1);                     // (B, 1)
        return logits.masked_fill(logits < kth, float.NegativeInfinity);
    }

    /// <summary>Nucleus filtering: keeps the smallest set of most likely tokens whose probability reaches p (always at least one).</summary>
    public static Tensor ApplyTopP(Tensor logits, double p)
    {
        if (p >= 1.0) return logits;
        var (sorted, indices) = logits.sort(dim: -1, descending: true);
        var cumulative = sorted.softmax(-1).cumsum(-1);
        var remove = (cumulative - sorted.softmax(-1)) >= p;                                // mass before this token already reaches p
        remove.narrow(-1, 0, 1).fill_(false); // the most likely token stays even when p rounds to 0 in float32 (top_p 1e-300)
        var removeInOriginalOrder = remove.scatter(-1, indices, remove);
        return logits.masked_fill(removeInOriginalOrder, float.NegativeInfinity);
    }

    /// <summary>OpenAI's penalties: frequency × (times generated) and presence × (generated at all) are subtracted.</summary>
    public static Tensor ApplyPresenceFrequencyPenalty(Tensor logits, IReadOnlyList<int> generated, double presence, double frequency)
    {
        if (generated.Count == 0 || presence == 0 && frequency == 0) return logits;
        long vocab = logits.shape[^1];
        var counts = bincount(tensor(generated.Select(i => (long)i).ToArray(), device: logits.device), minlength: vocab)
            .narrow(0, 0, vocab).to(ScalarType.Float32);                                    // (V)
        return logits - counts * frequency - (counts > 0).to(ScalarType.Float32) * presence;
    }

    /// <summary>HF's min_new_tokens: no end-of-sequence token can be chosen while fewer than <paramref name="minNewTokens"/> tokens are out.</summary>
    public static Tensor ApplyMinNewTokens(Tensor logits, IReadOnlyCollection<int> eosIds, int generatedSoFar, int minNewTokens)
    {
        long vocab = logits.shape[^1];
        var inVocab = eosIds.Where(id => id >= 0 && id < vocab).Select(id => (long)id).ToArray();
        if (generatedSoFar >= minNewTokens || inVocab.Length == 0) return logits;
        return logits.index_fill(-1, tensor(inVocab, device: logits.device), float.NegativeInfinity);
    }

    /// <summary>
    /// The last step of every decoder, on one sequence's (1, V) logits: greedy below <see cref="SamplingOptions.GreedyBelow"/>,
    /// otherwise temperature, top-k, top-p and a draw from the sequence's own generator (so a seeded request samples the
    /// same alone or in a batch). Logits that allow nothing, or NaN/inf from the model, are this sequence's error only.
    /// </summary>
    public static int Sample(Tensor logits, SamplingOptions options, torch.Generator generator)
    {
        var best = logits.max().item<float>();
        if (float.IsNaN(best) || float.IsPositiveInfinity(best) || logits.isnan().any().item<bool>())
            throw new TianGongException("generate: the model produced logits that are not finite (NaN or inf)");
        if (float.IsNegativeInfinity(best))
            throw new TianGongException("generate: every token is ruled out (constraints, min_new_tokens and the vocabulary leave none)");
        if (options.IsGreedy) return (int)logits.argmax(-1).item<long>();
        logits = ApplyTopK(logits / options.Temperature, options.TopK);
        logits = ApplyTopP(logits, options.TopP);
        return (int)multinomial(logits.softmax(-1), 1, generator: generator).item<long>();
    }

    /// <summary>
    /// <see cref="Sample"/> for the rows of (G, V) logits that share one set of options, each with its own generator, in a
    /// fixed number of ops instead of several per row: one max over all rows (the finite check and, when greedy, the
    /// tokens: max's index is argmax's, the first of equal maxima), and for sampling one temperature/top-k/top-p/softmax
    /// pass, one exponential draw per row from that row's generator and one argmax of p / q. That is how libtorch's
    /// multinomial draws one sample (argmax of p / q with q ~ Exp(1), a Gumbel-max in disguise), so a seeded row gets the
    /// token <see cref="Sample"/> gives it. A row whose logits fail the checks gets its error and no token.
    /// </summary>
    public static (int Token, Exception? Error)[] SampleRows(Tensor logits, SamplingOptions options, IReadOnlyList<torch.Generator> generators)
    {
        int rows = (int)logits.shape[0];
        var (values, indices) = logits.max(-1);                                             // (G), (G)
        var best = values.data<float>().ToArray();
        var result = new (int Token, Exception? Error)[rows];
        for (int i = 0; i < rows; i++)
        {
            if (float.IsNaN(best[i]) || float.IsPositiveInfinity(best[i]))
                result[i] = (-1, new TianGongException("generate: the model produced logits that are not finite (NaN or inf)"));
            else if (float.IsNegativeInfinity(best[i]))
                result[i] = (-1, new TianGongException("generate: every token is ruled out (constraints, min_new_tokens and the vocabulary leave none)"));
        }
        Tensor chosen = indices;
        if (!options.IsGreedy)
        {
            var probs = ApplyTopP(ApplyTopK(logits / options.Temperature, options.TopK), options.TopP).softmax(-1); // (G, V)
            var q = empty_like(probs);
            // The draws are most of sampling's cost (V scalar draws per row; libtorch makes them on one thread per call).
            // Rows have their own generators, so large batches draw on libtorch's threads at once, each row as alone.
            int threads = rows * probs.shape[1] >= 1 << 16 ? Math.Max(1, torch.get_num_threads()) : 1;
            if (threads == 1)
            {
                for (int i = 0; i < rows; i++)
                    if (result[i].Error is null) q[i].exponential_(1, generators[i]);
            }
            else
                Parallel.For(0, rows, new ParallelOptions { MaxDegreeOfParallelism = threads }, i =>
                {
                    if (result[i].Error is not null) return;
                    using var row = q[i];                                                       // not in any scope on a pool thread
                    row.exponential_(1, generators[i]);
                });
            chosen = (probs / q).argmax(-1);
        }
        var tokens = chosen.data<long>().ToArray();
        for (int i = 0; i < rows; i++)
            if (result[i].Error is null) result[i] = ((int)tokens[i], null);
        return result;
    }

    /// <summary>Ids the tokenizer cannot decode (a model's embedding padded past the tokenizer's vocabulary) are never chosen.</summary>
    internal sealed record VocabularyLimit(int TokenizerVocab) : ILogitsProcessor
    {
        public Tensor Process(Tensor logits, DecodingSequence sequence)
        {
            long vocab = logits.shape[^1];
            if (TokenizerVocab >= vocab) return logits;
            var result = logits.clone();
            result.narrow(-1, TokenizerVocab, vocab - TokenizerVocab).fill_(float.NegativeInfinity);
            return result;
        }
    }

    /// <summary>HF's repetition penalty counts the prompt (the decoder's ids for encoder-decoders) as well as the output.</summary>
    private sealed record RepetitionPenalty(double Penalty) : ILogitsProcessor
    {
        public Tensor Process(Tensor logits, DecodingSequence sequence)
        {
            var ids = sequence.ContextIds.Concat(sequence.Generated).Select(i => (long)i).ToArray();
            if (ids.Length == 0) return logits;
            return ApplyRepetitionPenalty(logits, tensor(ids, device: logits.device).unsqueeze(0), Penalty);
        }
    }

    private sealed record PresenceFrequencyPenalty(double Presence, double Frequency) : ILogitsProcessor
    {
        public Tensor Process(Tensor logits, DecodingSequence sequence) =>
            ApplyPresenceFrequencyPenalty(logits, sequence.Generated, Presence, Frequency);
    }

    private sealed record MinNewTokens(int Min) : ILogitsProcessor
    {
        public Tensor Process(Tensor logits, DecodingSequence sequence) =>
            ApplyMinNewTokens(logits, sequence.EosIds, sequence.Generated.Count, Min);
    }

    /// <summary>
    /// Tokens the constraint rules out get -inf. A mask shorter than the logits (the tokenizer's vocabulary under a
    /// padded embedding) rules out the rest; a mask that allows nothing is the constraint's error, named here.
    /// </summary>
    private sealed record ConstraintMask(ITokenConstraint Constraint) : ILogitsProcessor
    {
        public Tensor Process(Tensor logits, DecodingSequence sequence)
        {
            if (Constraint.AllowedTokens(sequence.Generated) is not { } allowed) return logits;
            int vocab = (int)logits.shape[^1];
            var mask = new bool[vocab];
            Array.Copy(allowed, mask, Math.Min(allowed.Length, vocab));
            if (Array.IndexOf(mask, true) < 0)
                throw new TianGongException($"{Constraint.Description}: no token of the vocabulary can come next after {sequence.Generated.Count} generated tokens");
            return logits.masked_fill(tensor(mask, device: logits.device).logical_not().unsqueeze(0), float.NegativeInfinity);
        }
    }
}
