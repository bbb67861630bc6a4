using System.Text;
using TianGong.Models;
using TianGong.Tokenizers;

namespace TianGong.Inference;

/// <summary>Restricts which tokens may come next, given what has been generated so far (e.g. acrostic lines).</summary>
public interface ITokenConstraint
{
    /// <summary>A bool mask (V) of allowed tokens, or null when anything may come next.</summary>
    Tensor? AllowedTokens(IReadOnlyList<int> generated);

    /// <summary>True once the constraint is satisfied and generation must end.</summary>
    bool IsComplete(IReadOnlyList<int> generated);
}

public sealed record GenerationResult(string Text, int[] TokenIds, string FinishReason);

/// <summary>
/// Autoregressive decoding with a KV cache: one forward pass over the prompt, then one position per token.
/// </summary>
public sealed class TextGenerator
{
    private readonly CausalLM model;
    private readonly ITextTokenizer? tokenizer;
    private readonly int? eosId;

    /// <summary>Without a tokenizer only <see cref="GenerateIds"/> works, and eos comes from the model's config.</summary>
    public TextGenerator(CausalLM model, ITextTokenizer? tokenizer)
    {
        this.model = model;
        this.tokenizer = tokenizer;
        eosId = tokenizer?.EosId ?? model.Config.EosTokenId;
    }

    public GenerationResult Generate(string prompt, SamplingOptions options, ITokenConstraint? constraint = null)
    {
        var tokenizer = this.tokenizer ?? throw new TianGongException("TextGenerator: text in and out needs a tokenizer; use GenerateIds");
        var promptIds = tokenizer.Encode(prompt);
        if (promptIds.Length == 0) promptIds = [tokenizer.BosId];
        var ids = GenerateIds([promptIds], options, constraint)[0];
        var (text, reason) = FinishText(ids.Generated, ids.FinishReason, options);
        return new GenerationResult(text, ids.Generated, reason);
    }

    public sealed record IdsResult(int[] Generated, string FinishReason);

    /// <summary>
    /// Generates for a batch of prompts of equal length (one forward pass per step for all of them).
    /// A sequence that finishes keeps decoding padding until the others do; its output stops where it finished.
    /// </summary>
    public IReadOnlyList<IdsResult> GenerateIds(IReadOnlyList<int[]> prompts, SamplingOptions options, ITokenConstraint? constraint = null)
    {
        options.Validate();
        if (tokenizer is null && options.StopStrings is { Count: > 0 })
            throw new TianGongException("generate: stop strings need a tokenizer");
        int batch = prompts.Count, promptLength = prompts[0].Length;
        if (prompts.Any(p => p.Length != promptLength)) throw new ArgumentException("prompts of one batch must have the same length");
        int context = model.Config.ContextLength;
        if (promptLength >= context)
            throw new TianGongException($"prompt of {promptLength} tokens leaves no room in the model's context of {context}");
        int maxNew = Math.Min(options.MaxNewTokens, context - promptLength);

        var generator = new torch.Generator((ulong)(options.Seed ?? Random.Shared.NextInt64()));
        var outputs = Enumerable.Range(0, batch).Select(_ => new List<int>()).ToArray();
        var finish = new string?[batch];
        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var _ = no_grad();
            using var cache = model.CreateCache(batch, promptLength + maxNew);
            using var history = tensor(prompts.SelectMany(p => p).Select(i => (long)i).ToArray(), [batch, promptLength]);
            var allIds = history.clone();
            var next = history.alias();
            for (int i = 0; i < maxNew && finish.Any(f => f is null); i++)
            {
                using var scope = NewDisposeScope();
                var logits = model.forward(next, cache).select(1, -1).to(ScalarType.Float32);   // (B, V)
                logits = LogitsProcessing.ApplyMinNewTokens(logits, eosId, i, options.MinNewTokens);
                var chosen = ChooseNext(logits, allIds, options, generator, outputs, constraint);  // (B)
                var chosenIds = chosen.data<long>().ToArray();
                for (int b = 0; b < batch; b++)
                {
                    if (finish[b] is not null) continue;
                    int token = (int)chosenIds[b];
                    if (options.StopAtEos && token == eosId) { finish[b] = "stop"; continue; }
                    outputs[b].Add(token);
                    if (constraint?.IsComplete(outputs[b]) == true || HitsStopString(outputs[b], options)) finish[b] = "stop";
                }
                var newAll = cat([allIds, chosen.unsqueeze(1)], dim: 1).MoveToOuterDisposeScope();
                allIds.Dispose();
                allIds = newAll;
                next.Dispose();
                next = chosen.unsqueeze(1).MoveToOuterDisposeScope();                             // (B, 1)
            }
            allIds.Dispose();
            next.Dispose();
        }
        finally
        {
            if (wasTraining) model.train();
        }
        return outputs.Select((o, b) => new IdsResult(o.ToArray(), finish[b] ?? "length")).ToList();
    }

    private static Tensor ChooseNext(Tensor logits, Tensor allIds, SamplingOptions o, torch.Generator generator, List<int>[] outputs, ITokenConstraint? constraint)
    {
        logits = LogitsProcessing.ApplyRepetitionPenalty(logits, allIds, o.RepetitionPenalty);
        if (constraint is not null)
            for (int b = 0; b < outputs.Length; b++)
                if (constraint.AllowedTokens(outputs[b]) is { } allowed)
                    logits[b] = logits[b].masked_fill(allowed.logical_not(), float.NegativeInfinity);
        return LogitsProcessing.Sample(logits, o.Temperature, o.TopK, o.TopP, generator);
    }

    private bool HitsStopString(List<int> generated, SamplingOptions o)
    {
        if (o.StopStrings is not { Count: > 0 }) return false;
        var text = tokenizer!.Decode(generated.ToArray());
        return o.StopStrings.Any(s => text.Contains(s, StringComparison.Ordinal));
    }

    /// <summary>Decodes and cuts the text at the first stop string, as OpenAI's API does (the stop string itself is not returned).</summary>
    private (string Text, string Reason) FinishText(int[] ids, string reason, SamplingOptions o)
    {
        var text = tokenizer!.Decode(ids, skipSpecialTokens: true);
        foreach (var s in o.StopStrings ?? [])
        {
            int at = text.IndexOf(s, StringComparison.Ordinal);
            if (at >= 0) return (text[..at], "stop");
        }
        return (text, reason);
    }
}
