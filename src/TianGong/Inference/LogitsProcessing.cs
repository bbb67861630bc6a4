namespace TianGong.Inference;

/// <summary>The logits transforms of sampling, each on (B, V) fp32 logits, in the order HF applies them.</summary>
public static class LogitsProcessing
{
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
        var removeInOriginalOrder = remove.scatter(-1, indices, remove);
        return logits.masked_fill(removeInOriginalOrder, float.NegativeInfinity);
    }

    /// <summary>HF's min_new_tokens: end-of-text cannot be chosen while fewer than <paramref name="minNewTokens"/> tokens are out.</summary>
    public static Tensor ApplyMinNewTokens(Tensor logits, int? eosId, int generatedSoFar, int minNewTokens)
    {
        if (generatedSoFar >= minNewTokens || eosId is not (>= 0) || eosId >= logits.shape[^1]) return logits;
        return logits.index_fill(-1, tensor(new long[] { eosId.Value }, device: logits.device), float.NegativeInfinity);
    }

    /// <summary>
    /// The last step of every decoder: greedy at temperature 0, otherwise temperature, top-k, top-p and a draw from
    /// the request's own generator (so a seeded request samples the same alone or in a batch). (B, V) → (B).
    /// </summary>
    public static Tensor Sample(Tensor logits, double temperature, int topK, double topP, torch.Generator generator)
    {
        if (temperature == 0) return logits.argmax(-1);
        logits = ApplyTopK(logits / temperature, topK);
        logits = ApplyTopP(logits, topP);
        return multinomial(logits.softmax(-1), 1, generator: generator).squeeze(1);
    }
}
