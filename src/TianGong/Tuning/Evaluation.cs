using TianGong.Data;
using TianGong.Models;
using TianGong.Tokenizers;

namespace TianGong.Tuning;

/// <summary>Perplexity of a causal LM over documents: the mean next-token loss over every predicted token.</summary>
public sealed record PerplexityResult(int Documents, long Tokens, double MeanLoss)
{
    public double Perplexity => Math.Exp(MeanLoss);
}

public static class Evaluation
{
    /// <summary>
    /// Each document is encoded (bos in front when the tokenizer has one, eos at the end) and cut into windows of at
    /// most <paramref name="window"/> + 1 tokens; every token after the first of a window is predicted once.
    /// </summary>
    public static PerplexityResult Perplexity(CausalLM model, ITextTokenizer tokenizer, IEnumerable<string> documents, int window)
    {
        window = Math.Min(window, model.Config.ContextLength);
        using var _ = no_grad();
        var device = model.parameters().First().device;
        double sum = 0;
        long tokens = 0;
        int docs = 0;
        foreach (var doc in documents)
        {
            docs++;
            var ids = new List<int>();
            if (tokenizer.BosId >= 0) ids.Add(tokenizer.BosId);
            ids.AddRange(tokenizer.Encode(doc));
            if (tokenizer.EosId >= 0) ids.Add(tokenizer.EosId);
            for (int start = 0; start + 1 < ids.Count; start += window)
            {
                using var scope = NewDisposeScope();
                var piece = ids.Skip(start).Take(window + 1).Select(i => (long)i).ToArray();
                var input = tensor(piece[..^1], device: device).unsqueeze(0);
                var target = tensor(piece[1..], device: device).unsqueeze(0);
                var logits = model.forward(input);
                var loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[^1]).to(ScalarType.Float32), target.reshape(-1), reduction: nn.Reduction.Sum);
                sum += loss.item<float>();
                tokens += piece.Length - 1;
            }
        }
        if (tokens == 0) throw new TianGongException("eval: the data has no tokens to predict");
        return new PerplexityResult(docs, tokens, sum / tokens);
    }

    /// <summary>Documents of a text/JSONL file (or chinese-poetry), as the lm task of finetune reads them.</summary>
    public static IEnumerable<string> Documents(string data, string? home = null) => Corpus.Open(data, new CorpusOptions(Home: home));
}
