using TianGong.Models;

namespace TianGong.Inference;

/// <param name="LogProbs">LogProbs[i] = log P(ids[i+1] | ids[0..i]).</param>
public sealed record ScoreResult(int[] Ids, float[] LogProbs, double Perplexity);

/// <summary>Per-token log-probabilities of a sequence under a model: the basis of perplexity and parity checks.</summary>
public static class Scorer
{
    public static ScoreResult Score(CausalLM model, int[] ids)
    {
        if (ids.Length < 2) throw new TianGongException("score: need at least two tokens (the first one is only context)");
        if (ids.Length > model.Config.ContextLength)
            throw new TianGongException($"score: {ids.Length} tokens exceed the model's context of {model.Config.ContextLength}");
        DecodingSequence.CheckIds(ids, model.Config.VocabSize, "score");
        model.eval();
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var input = tensor(ids.Select(i => (long)i).ToArray(), device: model.ModelDevice).unsqueeze(0);// (1, T)
        var logProbs = model.forward(input).to(ScalarType.Float64).log_softmax(-1)[0];       // (T, V)
        var next = input[0].narrow(0, 1, ids.Length - 1).unsqueeze(1);                       // (T-1, 1)
        var picked = logProbs.narrow(0, 0, ids.Length - 1).gather(1, next).squeeze(1);      // (T-1)
        var values = picked.data<double>().ToArray();
        return new ScoreResult(ids, values.Select(v => (float)v).ToArray(), Math.Exp(-values.Average()));
    }
}
