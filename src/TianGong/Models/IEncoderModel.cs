namespace TianGong.Models;

/// <summary>What an encoder returns: every position's hidden state and, when the model has one, the pooled first token.</summary>
public sealed record EncoderOutput(Tensor LastHiddenState, Tensor? PoolerOutput) : IDisposable
{
    public void Dispose()
    {
        LastHiddenState.Dispose();
        PoolerOutput?.Dispose();
    }
}

/// <summary>How one vector is made from an encoder's output for a whole sequence.</summary>
public enum Pooling
{
    /// <summary>The first token's last hidden state ([CLS] in BERT).</summary>
    Cls,
    /// <summary>The mean of the last hidden states over the positions the attention mask keeps.</summary>
    Mean,
    /// <summary>The model's own pooler (BERT: dense + tanh on the first token), as trained for next-sentence prediction.</summary>
    Pooler,
}

/// <summary>
/// A bidirectional encoder (BERT and its kin): token ids (B, T) in, contextual hidden states out. Commands that
/// embed text rely only on this, so they never ask which family they hold.
/// </summary>
public interface IEncoderModel
{
    IModelConfig Config { get; }

    /// <summary>
    /// attentionMask (B, T): 1 for tokens, 0 for padding (absent: all 1). tokenTypeIds (B, T): segment ids (absent: all 0).
    /// </summary>
    EncoderOutput Encode(Tensor inputIds, Tensor? attentionMask = null, Tensor? tokenTypeIds = null);
}

public static class SentenceEmbedding
{
    /// <summary>One vector (B, C) per sequence from <paramref name="output"/>, pooled as <paramref name="pooling"/> says.</summary>
    public static Tensor Pool(EncoderOutput output, Tensor? attentionMask, Pooling pooling)
    {
        var hidden = output.LastHiddenState;                                                 // (B, T, C)
        switch (pooling)
        {
            case Pooling.Cls:
                return hidden.select(1, 0).clone();
            case Pooling.Pooler:
                return output.PoolerOutput?.clone()
                    ?? throw new TianGongException("pooling 'pooler': this model has no pooler layer (use cls or mean)");
            case Pooling.Mean:
                using (var scope = NewDisposeScope())
                {
                    var mask = (attentionMask ?? ones(hidden.shape[0], hidden.shape[1], device: hidden.device))
                        .to(hidden.dtype).unsqueeze(-1);                                     // (B, T, 1)
                    // An all-padding row would divide by 0; clamping keeps its vector at 0 as sentence-transformers does.
                    var sum = (hidden * mask).sum(1);                                        // (B, C)
                    return (sum / mask.sum(1).clamp_min(1e-9)).MoveToOuterDisposeScope();
                }
            default:
                throw new TianGongException($"pooling: unknown value {pooling}");
        }
    }

    /// <summary>
    /// One vector per sequence, in one forward pass: sequences are right-padded to the longest and the padding is
    /// masked out, so each vector equals the one its sequence gets alone. The pad id is 0: masked keys are never
    /// attended to, so its value cannot change a real token's output. tokenTypes, when given, holds each sequence's
    /// segment ids (BERT sentence pairs: 0 for the first sentence, 1 for the second).
    /// </summary>
    public static List<float[]> Embed(IEncoderModel encoder, IReadOnlyList<int[]> sequences, Pooling pooling, IReadOnlyList<int[]>? tokenTypes = null)
    {
        if (sequences.Count == 0 || sequences.Any(s => s.Length == 0)) throw new TianGongException("embed: every sequence needs at least one token");
        if (tokenTypes is not null && (tokenTypes.Count != sequences.Count || tokenTypes.Where((types, b) => types.Length != sequences[b].Length).Any()))
            throw new TianGongException("embed: token type ids must give one id per token of every sequence");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        int longest = sequences.Max(s => s.Length);
        var idData = new long[sequences.Count * longest];
        var maskData = new long[sequences.Count * longest];
        var typeData = new long[sequences.Count * longest];
        for (int b = 0; b < sequences.Count; b++)
            for (int t = 0; t < sequences[b].Length; t++)
            {
                int id = sequences[b][t];
                if (id < 0 || id >= encoder.Config.VocabSize)
                    throw new TianGongException($"embed: token id {id} is outside the vocabulary (vocab_size {encoder.Config.VocabSize})");
                idData[b * longest + t] = id;
                maskData[b * longest + t] = 1;
                typeData[b * longest + t] = tokenTypes?[b][t] ?? 0;
            }
        var inputIds = tensor(idData, [sequences.Count, longest]);                         // (B, T)
        var mask = tensor(maskData, [sequences.Count, longest]);
        var types = tensor(typeData, [sequences.Count, longest]);
        using var output = encoder.Encode(inputIds, mask, types);
        var pooled = Pool(output, mask, pooling).to(ScalarType.Float32).contiguous();         // (B, C)
        return Enumerable.Range(0, sequences.Count).Select(b => pooled[b].data<float>().ToArray()).ToList();
    }
}
