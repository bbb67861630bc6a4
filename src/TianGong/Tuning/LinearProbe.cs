using TianGong.Models;
using TianGong.Tokenizers;
using TianGong.Training;
using TorchSharp.Modules;

namespace TianGong.Tuning;

/// <summary>
/// The linear-probe baseline of few-shot classification: the frozen model's pooled features (the mean of the last
/// hidden states over the text's tokens), standardised with the training rows' statistics, and a softmax regression
/// (L2-regularised through AdamW's decay) fitted on the few labeled rows.
/// </summary>
public static class LinearProbe
{
    /// <summary>(N, C) mean-pooled last hidden states of each text (cut to its first <paramref name="maxTokens"/> tokens).</summary>
    public static Tensor Features(CausalLM model, ITextTokenizer tokenizer, IEnumerable<string> texts, int maxTokens)
    {
        using var _ = no_grad();
        var device = model.parameters().First().device;
        var rows = new List<Tensor>();
        try
        {
            foreach (var text in texts)
            {
                var ids = tokenizer.Encode(text);
                if (ids.Length == 0) ids = [Math.Max(0, tokenizer.EosId)];
                ids = ids[..Math.Min(ids.Length, Math.Min(maxTokens, model.Config.ContextLength))];
                using var scope = NewDisposeScope();
                var hidden = model.Hidden(tensor(ids.Select(i => (long)i).ToArray(), device: device).unsqueeze(0)); // (1, T, C)
                rows.Add(hidden[0].mean([0]).to(ScalarType.Float32).cpu().MoveToOuterDisposeScope());
            }
            return stack(rows);
        }
        finally
        {
            foreach (var r in rows) r.Dispose();
        }
    }

    /// <summary>Fits the probe on (trainX, trainY) and returns the predicted class of each row of testX.</summary>
    public static int[] FitAndPredict(Tensor trainX, int[] trainY, Tensor testX, int classes, int steps = 300, double lr = 0.05, double weightDecay = 0.01)
    {
        using var scope = NewDisposeScope();
        var mean = trainX.mean([0], keepdim: true);
        var std = trainX.std(0, keepdim: true).clamp_min(1e-6);
        var x = (trainX - mean) / std;
        var y = tensor(trainY.Select(v => (long)v).ToArray());
        var w = new Parameter(zeros(x.shape[1], classes));
        var b = new Parameter(zeros(classes));
        using var optimizer = new Training.AdamW([new ParameterGroup([("weight", w)], weightDecay), new ParameterGroup([("bias", b)], 0)], new AdamWOptions(0.9, 0.999, 1e-8, weightDecay));
        for (int step = 0; step < steps; step++)
        {
            using var stepScope = NewDisposeScope();
            var loss = nn.functional.cross_entropy(x.matmul(w) + b, y);
            loss.backward();
            optimizer.Step(lr);
            optimizer.ZeroGrad();
        }
        using var _ = no_grad();
        var predicted = (((testX - mean) / std).matmul(w) + b).argmax(1);
        return predicted.data<long>().Select(v => (int)v).ToArray();
    }
}
