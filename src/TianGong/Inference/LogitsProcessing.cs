using System.Runtime.Intrinsics;

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
        var (token, error) = SampleRows(logits.reshape(1, -1), options, [generator])[0];
        if (error is not null) throw error;
        return token;
    }

    /// <summary><see cref="Sample"/> with the generator's state held in C# (<see cref="DecodingSequence"/>'s, kept between steps).</summary>
    internal static int Sample(Tensor logits, SamplingOptions options, LibtorchCpuDraws draws)
    {
        var (token, error) = SampleRows(logits.reshape(1, -1), options, [draws])[0];
        if (error is not null) throw error;
        return token;
    }

    /// <summary>
    /// <see cref="Sample"/> for the rows of (G, V) logits that share one set of options, each with its own generator.
    /// A row draws what libtorch's multinomial draws for one sample from its generator: it returns argmax of p / q with
    /// q ~ Exp(1) per token (a Gumbel-max in disguise), q from one <c>exponential_</c> of V elements. Those draws are made
    /// here (<see cref="LibtorchCpuDraws"/>: the same bits, the generator left where libtorch leaves it), so a seed draws
    /// what it drew before, but the logarithm of a draw is taken only for tokens that can win: those top-k/top-p leave,
    /// or without them, those whose bound p / x on p / q (−log1p(−x) ≥ x) reaches a first exact ratio.
    /// Everything else runs as plain loops over the tensors' memory: the finite checks, greedy's argmax (the first of
    /// equal maxima, as libtorch's), temperature, top-k, top-p, softmax and the argmax of p / q.
    /// Why not libtorch ops: served requests take top_k/top_p from generation_config.json, and the dozen small ops of
    /// those filters (sort, cumsum, two softmaxes, scatter, masked_fill…) cost 200–500 µs per row on the serving engine's
    /// thread, against a 5 ms forward pass: right after a forward pass every small op pays cache misses (the pass evicts
    /// libtorch's dispatch and kernel code; <c>TianGong.Bench serving … after-forward</c>). libtorch's exponential_ makes
    /// its V draws one at a time, about 20 ns each (0.3 ms per token at a 16,384-token vocabulary).
    /// Softmax here uses .NET's exp, not libtorch's vectorized one, so probabilities can differ from the ops' in the last bits: a token differs only where two candidates' p / q, or top-p's cumulative mass and p, are equal
    /// to rounding (the tests check the tokens against the ops). CLI, engine and server all choose through this method.
    /// A row whose logits fail the checks gets its error, no draw and no token.
    /// </summary>
    /// <param name="allowedBelow">Only ids below this can be chosen (a model's embedding padded past the tokenizer's
    /// vocabulary): as logits filled with −inf from there, without copying them; the draws still cover every id.</param>
    public static (int Token, Exception? Error)[] SampleRows(Tensor logits, SamplingOptions options, IReadOnlyList<torch.Generator> generators, int? allowedBelow = null)
    {
        if (options.IsGreedy) return SampleRows(logits, options, Array.Empty<LibtorchCpuDraws>(), allowedBelow);
        var draws = generators.Select(g => LibtorchCpuDraws.Read(g)
            ?? throw new InvalidOperationException("sampling: this libtorch's CPU generator state is not laid out as libtorch's CPUGeneratorImplState")).ToArray();
        var result = SampleRows(logits, options, draws, allowedBelow);
        for (int i = 0; i < draws.Length; i++)
            if (result[i].Error is null) draws[i].WriteBack();                                  // a row that failed drew nothing
        return result;
    }

    /// <summary>
    /// <see cref="SampleRows(Tensor, SamplingOptions, IReadOnlyList{torch.Generator}, int?)"/> on generator states held in C#
    /// (none needed for greedy): a caller that samples every step from the same generators keeps their states here and
    /// saves a get_state and a set_state (about 10 µs) per row and step.
    /// </summary>
    internal static (int Token, Exception? Error)[] SampleRows(Tensor logits, SamplingOptions options, IReadOnlyList<LibtorchCpuDraws> draws, int? allowedBelow = null)
    {
        using var scope = NewDisposeScope();                                                 // the copies below
        int rows = (int)logits.shape[0];
        if (logits.device_type != DeviceType.CPU) logits = logits.cpu();                    // the generators are CPU ones
        if (logits.dtype != ScalarType.Float32) logits = logits.to(ScalarType.Float32);
        if (!logits.is_contiguous()) logits = logits.contiguous();
        int vocab = (int)logits.shape[1];
        int allowed = Math.Clamp(allowedBelow ?? vocab, 1, vocab);
        var result = new (int Token, Exception? Error)[rows];
        var maxima = new float[rows];                                                        // each row's largest logit
        for (int i = 0; i < rows; i++)
        {
            var (best, value) = IndexOfMax(RowOf(logits, i, vocab)[..allowed]);
            if (float.IsNaN(value) || float.IsPositiveInfinity(value))
                result[i] = (-1, new TianGongException("generate: the model produced logits that are not finite (NaN or inf)"));
            else if (float.IsNegativeInfinity(value))
                result[i] = (-1, new TianGongException("generate: every token is ruled out (constraints, min_new_tokens and the vocabulary leave none)"));
            else (result[i], maxima[i]) = ((best, null), value);
        }
        if (options.IsGreedy) return result;
        // Rows have their own generators, so large batches sample on two threads, each row as alone.
        int threads = rows > 1 && rows * vocab >= 1 << 16 ? Math.Max(1, torch.get_num_threads()) : 1;
        void SampleOne(int i)
        {
            if (result[i].Error is not null) return;
            var scaled = System.Buffers.ArrayPool<float>.Shared.Rent(vocab);
            var approximate = System.Buffers.ArrayPool<float>.Shared.Rent(vocab);
            var uniforms = System.Buffers.ArrayPool<ulong>.Shared.Rent(vocab);
            try
            {
                result[i] = (SampleRow(RowOf(logits, i, vocab)[..allowed], draws[i], options, maxima[i], scaled.AsSpan(0, vocab), uniforms.AsSpan(0, vocab), approximate.AsSpan(0, vocab)), null);
            }
            finally
            {
                System.Buffers.ArrayPool<float>.Shared.Return(scaled);
                System.Buffers.ArrayPool<float>.Shared.Return(approximate);
                System.Buffers.ArrayPool<ulong>.Shared.Return(uniforms);
            }
        }
        if (threads == 1)
            for (int i = 0; i < rows; i++) SampleOne(i);
        else
        {
            int shares = Math.Min(threads, rows);
            Models.Layers.DecodeThreads.Shared.Run(shares, t =>
            {
                for (int i = rows * t / shares; i < rows * (t + 1) / shares; i++) SampleOne(i);
            });
        }
        return result;
    }

    /// <summary>
    /// One row's token from finite-checked logits and its generator's draws: logits / temperature, top-k, top-p (the
    /// filters' <see cref="ApplyTopK"/> and <see cref="ApplyTopP"/> as loops), then argmax of softmax / q. Softmax's
    /// normalisation divides every probability by the same sum, so the argmax is taken over p = exp(l − max) / q, as the
    /// ops' argmax would scan it: the first NaN (0 / 0: a ruled-out token whose draw is 0) wins at once, else the first
    /// of equal maxima. The generator advances by V uniforms whatever the filters leave, as exponential_ draws them; when
    /// the filters leave a few tokens (top-k), only theirs and any uniform of 0 are made (<see cref="LibtorchCpuDraws.SkipUniformBits"/>).
    /// </summary>
    /// <param name="logitsMax">The largest of <paramref name="logits"/>: divided by the temperature it is the largest scaled
    /// logit (division by a positive number never reverses an order, even rounded), so no pass looks for it again.</param>
    private static int SampleRow(ReadOnlySpan<float> logits, LibtorchCpuDraws draws, SamplingOptions options, float logitsMax, Span<float> scaled, Span<ulong> uniforms, Span<float> approximate)
    {
        int vocab = scaled.Length;                                                            // logits may stop short: ids past them are ruled out
        Divide(logits, (float)options.Temperature, scaled);                                // as libtorch's tensor / double scalar in fp32
        scaled[logits.Length..].Fill(float.NegativeInfinity);
        float max = logitsMax / (float)options.Temperature;
        bool topK = options.TopK > 0 && options.TopK < vocab;
        if (topK || options.TopP < 1.0)
        {
            // The filters as a list of the tokens they leave (ascending), not as −inf over the vocabulary: top-k leaves
            // about k, and every later pass runs over those.
            var kept = System.Buffers.ArrayPool<int>.Shared.Rent(vocab);
            try
            {
                // Ids past the logits (a padded vocabulary) are −inf: they never displace one of the k largest before them,
                // and where fewer than k come before them, the k-th largest is −inf.
                int count = !topK ? FillRange(kept.AsSpan(0, vocab))
                    : AtLeast(scaled, options.TopK <= logits.Length ? KthLargest(scaled[..logits.Length], options.TopK) : float.NegativeInfinity, kept);
                if (options.TopP < 1.0) count = KeepNucleus(scaled, max, options.TopP, kept.AsSpan(0, count));
                var keptBits = uniforms[..count];
                var zeros = new List<int>();
                if (count <= vocab / 8)
                    draws.SkipUniformBits(vocab, kept.AsSpan(0, count), keptBits, zeros);      // top-k's few: only their draws are tempered
                else
                {
                    draws.NextUniformBits(uniforms);
                    for (int v = 0; v < vocab; v++)                                             // in place: kept[n] ≥ n, so uniforms[kept[n]] is still unread
                        if (uniforms[v] == 0) zeros.Add(v);
                    for (int n = 0; n < count; n++) keptBits[n] = uniforms[kept[n]];
                }
                return ArgmaxOfKept(scaled, max, kept.AsSpan(0, count), keptBits, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(zeros));
            }
            finally { System.Buffers.ArrayPool<int>.Shared.Return(kept); }
        }
        draws.NextUniformBits(uniforms);
        // A bound on each token's p / q from an approximate p (vectorised exp, at most a few ulps off, never 0) and
        // q ≥ x; the token with the largest bound gives a first exact ratio, the floor. Compared as products, not quotients.
        ApproximateExp(scaled, max, approximate);
        int first = LargestBound(scaled, approximate, uniforms);
        float floor = first < 0 ? float.NegativeInfinity : Ratio(scaled[first], max, uniforms[first]);
        return ArgmaxAboveFloor(scaled, max, approximate, uniforms, floor);
    }

    private const double UniformUnit = 1.0 / (1UL << 53);
    private const double BoundMargin = 1 + 1.0 / (1 << 16);  // covers the approximate exp, q's rounding to fp32 and the division's

    /// <summary>
    /// The allowed token with x &gt; 0 whose bound p̃ / x is largest (about: any such token gives a valid floor, the larger
    /// its ratio the more the next pass skips), or −1 when there is none. Four at a time in double, as the scalar tail.
    /// </summary>
    private static int LargestBound(ReadOnlySpan<float> scaled, ReadOnlySpan<float> approximate, ReadOnlySpan<ulong> uniforms)
    {
        int vocab = scaled.Length, v = 0, first = -1;
        double firstBound = 0;
        if (Vector256.IsHardwareAccelerated && vocab >= 4)
        {
            var bestBound = Vector256<double>.Zero;
            var bestIndex = Vector256.Create(-1L);
            var index = Vector256.Create(0L, 1, 2, 3);
            for (; v + 4 <= vocab; v += 4, index += Vector256.Create(4L))
            {
                var x = Vector256.ConvertToDouble(Vector256.Create(uniforms.Slice(v, 4)).AsInt64()) * UniformUnit; // < 2⁵³: exact
                var p = Widen(approximate.Slice(v, 4));
                var allowed = ~Vector256.Equals(Widen(scaled.Slice(v, 4)), Vector256.Create(double.NegativeInfinity))
                    & Vector256.GreaterThan(x, Vector256<double>.Zero);
                var bound = Vector256.ConditionalSelect(allowed, p / Vector256.Max(x, Vector256.Create(double.Epsilon)), Vector256<double>.Zero);
                var better = Vector256.GreaterThan(bound, bestBound);
                bestBound = Vector256.ConditionalSelect(better, bound, bestBound);
                bestIndex = Vector256.ConditionalSelect(better.AsInt64(), index, bestIndex);
            }
            for (int lane = 0; lane < 4; lane++)
                if (bestIndex[lane] >= 0 && bestBound[lane] > firstBound) (first, firstBound) = ((int)bestIndex[lane], bestBound[lane]);
        }
        for (; v < vocab; v++)
        {
            double x = uniforms[v] * UniformUnit;
            if (scaled[v] != float.NegativeInfinity && approximate[v] > firstBound * x && x > 0) (first, firstBound) = (v, approximate[v] / x);
        }
        return first;
    }

    /// <summary>
    /// The argmax of p / q (first of equal maxima; the first NaN wins at once) over every token, computed exactly only
    /// where it can reach <paramref name="floor"/>: a draw of 0 (q = 0: +inf, or NaN where p = 0), or a bound at the floor.
    /// A ruled-out token with a draw above 0 has ratio 0, below any floor (the most likely token's p is 1). The test runs
    /// four tokens at a time in double, the same products as one at a time, and the exact ratios in index order.
    /// </summary>
    private static int ArgmaxAboveFloor(ReadOnlySpan<float> scaled, float max, ReadOnlySpan<float> approximate, ReadOnlySpan<ulong> uniforms, float floor)
    {
        int vocab = scaled.Length, v = 0, best = 0;
        float bestRatio = float.NegativeInfinity;
        bool Consider(int at, ReadOnlySpan<float> scaled, ReadOnlySpan<ulong> uniforms, ref int best, ref float bestRatio)
        {
            float ratio = Ratio(scaled[at], max, uniforms[at]);
            if (ratio > bestRatio || float.IsNaN(ratio)) { (best, bestRatio) = (at, ratio); if (float.IsNaN(ratio)) return false; }
            return true;
        }
        if (Vector256.IsHardwareAccelerated)
            for (; v + 4 <= vocab; v += 4)
            {
                var u = Vector256.Create(uniforms.Slice(v, 4));
                var x = Vector256.ConvertToDouble(u.AsInt64()) * UniformUnit;
                var below = Vector256.LessThan(Widen(approximate.Slice(v, 4)) * BoundMargin, Vector256.Create((double)floor) * x);
                var ruledOut = Vector256.Equals(Widen(scaled.Slice(v, 4)), Vector256.Create(double.NegativeInfinity));
                uint exact = (Vector256.Equals(u, Vector256<ulong>.Zero).AsDouble() | ~(ruledOut | below)).ExtractMostSignificantBits();
                for (; exact != 0; exact &= exact - 1)
                    if (!Consider(v + System.Numerics.BitOperations.TrailingZeroCount(exact), scaled, uniforms, ref best, ref bestRatio)) return best;
            }
        for (; v < vocab; v++)
        {
            if (uniforms[v] != 0 && (scaled[v] == float.NegativeInfinity || approximate[v] * BoundMargin < floor * (uniforms[v] * UniformUnit))) continue;
            if (!Consider(v, scaled, uniforms, ref best, ref bestRatio)) return best;
        }
        return best;
    }

    /// <summary>
    /// The argmax of p / q over the tokens the filters kept (ascending, with their uniforms' bits) and, merged in index
    /// order, the tokens whose draw is 0 (<paramref name="zeros"/>, ascending; q = 0: a kept token's ratio is +inf, a
    /// ruled-out one's 0 / 0 = NaN, which wins as in the ops' scan); every other ruled-out token has ratio 0, below the
    /// most likely token's.
    /// </summary>
    private static int ArgmaxOfKept(ReadOnlySpan<float> scaled, float max, ReadOnlySpan<int> kept, ReadOnlySpan<ulong> keptBits, ReadOnlySpan<int> zeros)
    {
        int best = 0;
        float bestRatio = float.NegativeInfinity;
        int k = 0, z = 0;
        while (k < kept.Length || z < zeros.Length)
        {
            int v;
            bool allowed;
            ulong bits;
            if (z >= zeros.Length || (k < kept.Length && kept[k] <= zeros[z]))
            {
                (v, allowed, bits) = (kept[k], true, keptBits[k]);
                k++;
                if (z < zeros.Length && v == zeros[z]) z++;
            }
            else (v, allowed, bits) = (zeros[z++], false, 0UL);
            float ratio = (allowed ? MathF.Exp(scaled[v] - max) : 0f) / LibtorchCpuDraws.Exponential(bits);
            if (ratio > bestRatio || float.IsNaN(ratio)) { (best, bestRatio) = (v, ratio); if (float.IsNaN(ratio)) break; }
        }
        return best;
    }

    /// <summary>Writes the indices of values ≥ <paramref name="threshold"/> in order; returns how many.</summary>
    private static int AtLeast(ReadOnlySpan<float> values, float threshold, Span<int> indices)
    {
        int count = 0, v = 0;
        if (Vector256.IsHardwareAccelerated)
            for (; v + Vector256<float>.Count <= values.Length; v += Vector256<float>.Count)
            {
                uint mask = Vector256.GreaterThanOrEqual(Vector256.Create(values.Slice(v, Vector256<float>.Count)), Vector256.Create(threshold)).ExtractMostSignificantBits();
                for (; mask != 0; mask &= mask - 1) indices[count++] = v + System.Numerics.BitOperations.TrailingZeroCount(mask);
            }
        for (; v < values.Length; v++)
            if (values[v] >= threshold) indices[count++] = v;
        return count;
    }

    private static int FillRange(Span<int> indices)
    {
        for (int v = 0; v < indices.Length; v++) indices[v] = v;
        return indices.Length;
    }

    /// <summary>x / divisor element by element, eight at a time (IEEE division: the same bits as one at a time).</summary>
    private static void Divide(ReadOnlySpan<float> x, float divisor, Span<float> result)
    {
        int v = 0;
        if (Vector256.IsHardwareAccelerated)
            for (; v + Vector256<float>.Count <= x.Length; v += Vector256<float>.Count)
                (Vector256.Create(x.Slice(v, Vector256<float>.Count)) / Vector256.Create(divisor)).CopyTo(result.Slice(v, Vector256<float>.Count));
        for (; v < x.Length; v++) result[v] = x[v] / divisor;
    }

    /// <summary>What the ops compute for one token: softmax's numerator (exp(−inf) is 0: no call for the filtered) over its fp32 draw.</summary>
    private static float Ratio(float scaled, float max, ulong uniform) =>
        (scaled == float.NegativeInfinity ? 0f : MathF.Exp(scaled - max)) / LibtorchCpuDraws.Exponential(uniform);

    /// <summary>Four floats as doubles (exact).</summary>
    private static Vector256<double> Widen(ReadOnlySpan<float> four)
    {
        var f = Vector128.Create(four);
        return Vector256.Create(Vector128.WidenLower(f), Vector128.WidenUpper(f));
    }

    /// <summary>e^(x − shift) for every x by <see cref="Models.Layers.VectorExp"/> (inputs clamped to [−87, 88], so −inf gives a tiny positive value).</summary>
    private static void ApproximateExp(ReadOnlySpan<float> x, float shift, Span<float> result)
    {
        int v = 0;
        if (Vector256.IsHardwareAccelerated)
            for (; v + Vector256<float>.Count <= x.Length; v += Vector256<float>.Count)
                Models.Layers.VectorExp.Exp(Vector256.Create(x.Slice(v, Vector256<float>.Count)) - Vector256.Create(shift)).CopyTo(result.Slice(v, Vector256<float>.Count));
        for (; v < x.Length; v++) result[v] = MathF.Exp(Math.Max(x[v] - shift, -87f));
    }

    /// <summary>
    /// The k-th largest value counting repeats (topk(k).values[k − 1]). Over a large vocabulary a min-heap of the k largest
    /// so far pays a few hundred heap updates (k · ln(V / k) for logits in random order); instead a floor comes from the
    /// maxima of blocks of 64: their k-th largest is at most the answer (the k largest maxima are k of the values), and the
    /// values at or above it, usually a few times k, are sorted. Where the floor leaves too many (fewer than k finite
    /// blocks: a padded vocabulary's −inf), the heap over all values.
    /// </summary>
    private static float KthLargest(ReadOnlySpan<float> values, int k)
    {
        const int Block = 64;
        int blocks = values.Length / Block;
        if (!Vector256.IsHardwareAccelerated || blocks < 4 * k) return KthLargestByHeap(values, k);
        var maxima = System.Buffers.ArrayPool<float>.Shared.Rent(blocks);
        int cap = values.Length / 8;
        var candidates = System.Buffers.ArrayPool<float>.Shared.Rent(cap);
        try
        {
            for (int b = 0; b < blocks; b++)
            {
                var most = Vector256.Create(values.Slice(b * Block, Vector256<float>.Count));
                for (int at = b * Block + Vector256<float>.Count; at < (b + 1) * Block; at += Vector256<float>.Count)
                    most = Vector256.Max(most, Vector256.Create(values.Slice(at, Vector256<float>.Count)));
                float max = most[0];
                for (int lane = 1; lane < Vector256<float>.Count; lane++) max = Math.Max(max, most[lane]);
                maxima[b] = max;
            }
            float floor = KthLargestByHeap(maxima.AsSpan(0, blocks), k);
            if (floor == float.NegativeInfinity) return KthLargestByHeap(values, k);
            int count = 0, v = 0;
            for (; v + Vector256<float>.Count <= values.Length; v += Vector256<float>.Count)
            {
                uint mask = Vector256.GreaterThanOrEqual(Vector256.Create(values.Slice(v, Vector256<float>.Count)), Vector256.Create(floor)).ExtractMostSignificantBits();
                if (mask == 0) continue;
                if (count + Vector256<float>.Count > cap) return KthLargestByHeap(values, k);
                for (; mask != 0; mask &= mask - 1) candidates[count++] = values[v + System.Numerics.BitOperations.TrailingZeroCount(mask)];
            }
            for (; v < values.Length; v++)
                if (values[v] >= floor)
                {
                    if (count == cap) return KthLargestByHeap(values, k);
                    candidates[count++] = values[v];
                }
            var found = candidates.AsSpan(0, count);                                          // ≥ k of them: the floor is one of the values
            found.Sort();
            return found[count - k];
        }
        finally
        {
            System.Buffers.ArrayPool<float>.Shared.Return(maxima);
            System.Buffers.ArrayPool<float>.Shared.Return(candidates);
        }
    }

    /// <summary><see cref="KthLargest"/> from a min-heap of the k largest so far, skipping runs below the heap's minimum eight at a time.</summary>
    private static float KthLargestByHeap(ReadOnlySpan<float> values, int k)
    {
        var heap = new PriorityQueue<float, float>(k);
        for (int n = 0; n < k; n++) heap.Enqueue(values[n], values[n]);
        float smallest = heap.Peek();
        int i = k;
        if (Vector256.IsHardwareAccelerated)                                                 // eight at a time past runs below the heap's minimum
            for (; i + Vector256<float>.Count <= values.Length; i += Vector256<float>.Count)
            {
                if (Vector256.GreaterThanAny(Vector256.Create(values.Slice(i, Vector256<float>.Count)), Vector256.Create(smallest)))
                    for (int at = i; at < i + Vector256<float>.Count; at++)
                        if (values[at] > smallest)
                        {
                            heap.EnqueueDequeue(values[at], values[at]);
                            smallest = heap.Peek();
                        }
            }
        for (; i < values.Length; i++)
            if (values[i] > smallest)
            {
                heap.EnqueueDequeue(values[i], values[i]);
                smallest = heap.Peek();
            }
        return smallest;
    }

    /// <summary>
    /// <see cref="ApplyTopP"/> on one row's kept tokens (ascending; the rest have probability 0 and come last in the ops'
    /// order too): in order of falling logit (equal logits by index, as libtorch's stable CPU sort leaves them), a token
    /// is removed when the probability mass before it already reaches p; the most likely token always stays. The kept
    /// list is compacted in place, still ascending; returns its new length.
    /// </summary>
    private static int KeepNucleus(ReadOnlySpan<float> scaled, float max, double p, Span<int> kept)
    {
        var order = System.Buffers.ArrayPool<long>.Shared.Rent(kept.Length);                // (falling logit, index) as one sortable key
        var removed = System.Buffers.ArrayPool<bool>.Shared.Rent(scaled.Length);
        try
        {
            double sum = 0;
            for (int n = 0; n < kept.Length; n++)
            {
                int v = kept[n];
                int bits = BitConverter.SingleToInt32Bits(-scaled[v]);
                long ascending = bits >= 0 ? bits : bits ^ int.MaxValue;                        // float order as integer order
                order[n] = (ascending << 32) | (uint)v;
                removed[v] = false;
                sum += MathF.Exp(scaled[v] - max);
            }
            Array.Sort(order, 0, kept.Length);
            double before = 0;
            for (int n = 0; n < kept.Length; n++)
            {
                int v = (int)(order[n] & uint.MaxValue);
                double probability = MathF.Exp(scaled[v] - max) / sum;
                if (n > 0 && before >= p) removed[v] = true;
                before += probability;
            }
            int count = 0;
            foreach (int v in kept)
                if (!removed[v]) kept[count++] = v;
            return count;
        }
        finally
        {
            System.Buffers.ArrayPool<long>.Shared.Return(order);
            System.Buffers.ArrayPool<bool>.Shared.Return(removed);
        }
    }

    /// <summary>Row <paramref name="row"/> of a contiguous CPU (G, V) fp32 tensor, as a span over its memory (the tensor must outlive it).</summary>
    private static unsafe ReadOnlySpan<float> RowOf(Tensor matrix, int row, int width) =>
        new((float*)TensorMemory.DataPointer(matrix) + (long)row * width, width);

    /// <summary>The first index of the largest value, as libtorch's max and argmax (NaN counts as the largest), and the value.</summary>
    private static (int Index, float Value) IndexOfMax(ReadOnlySpan<float> values)
    {
        // Eight at a time: the maximum, then its first index (== treats ±0 alike, as the scan below); NaN anywhere: the scan.
        if (Vector256.IsHardwareAccelerated && values.Length >= 2 * Vector256<float>.Count)
        {
            var most = Vector256.Create(values[..Vector256<float>.Count]);
            var nan = Vector256<float>.Zero;
            int v = 0;
            for (; v + Vector256<float>.Count <= values.Length; v += Vector256<float>.Count)
            {
                var chunk = Vector256.Create(values.Slice(v, Vector256<float>.Count));
                most = Vector256.Max(most, chunk);
                nan |= ~Vector256.Equals(chunk, chunk);
            }
            float top = float.NegativeInfinity;
            for (int lane = 0; lane < Vector256<float>.Count; lane++) top = Math.Max(top, most[lane]);
            for (; v < values.Length; v++)
            {
                if (float.IsNaN(values[v])) nan = Vector256<float>.AllBitsSet;
                top = Math.Max(top, values[v]);
            }
            if (nan == Vector256<float>.Zero && !float.IsNaN(top))
            {
                int w = 0;
                for (; w + Vector256<float>.Count <= values.Length; w += Vector256<float>.Count)
                {
                    uint equal = Vector256.Equals(Vector256.Create(values.Slice(w, Vector256<float>.Count)), Vector256.Create(top)).ExtractMostSignificantBits();
                    if (equal != 0)
                    {
                        int first = w + System.Numerics.BitOperations.TrailingZeroCount(equal);
                        return (first, values[first]);
                    }
                }
                for (; w < values.Length; w++)
                    if (values[w] == top) return (w, values[w]);
            }
        }
        int best = 0;
        float max = values[0];
        for (int v = 1; v < values.Length && !float.IsNaN(max); v++)
            if (values[v] > max || float.IsNaN(values[v])) (best, max) = (v, values[v]);
        return (best, max);
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
