using TianGong.Models;
using TianGong.Tokenizers;

namespace TianGong.Inference;

public sealed record GenerationResult(string Text, int[] TokenIds, string FinishReason);

/// <summary>
/// Autoregressive decoding with a KV cache: one forward pass over the prompt, then one position per token.
/// This class only calls the model and keeps the batch together; every per-token decision (processors, sampling,
/// stop conditions) is the decoding core's, one <see cref="DecodingSequence"/> per prompt.
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
        using var sequence = Decode([promptIds], options, constraint)[0];
        return new GenerationResult(sequence.Text(), [.. sequence.Generated], sequence.FinishReason!);
    }

    public sealed record IdsResult(int[] Generated, string FinishReason);

    /// <summary>
    /// Generates for a batch of prompts of equal length (one forward pass per step for all of them); each prompt samples
    /// with its own generator seeded from the options, so a row gives what the prompt gives alone.
    /// </summary>
    public IReadOnlyList<IdsResult> GenerateIds(IReadOnlyList<int[]> prompts, SamplingOptions options, ITokenConstraint? constraint = null)
    {
        var sequences = Decode(prompts, options, constraint);
        try { return [.. sequences.Select(s => new IdsResult([.. s.Generated], s.FinishReason!))]; }
        finally { foreach (var s in sequences) s.Dispose(); }
    }

    /// <summary>
    /// The batch loop: a finished row keeps feeding its last token until every row is done (its output no longer changes).
    /// </summary>
    private DecodingSequence[] Decode(IReadOnlyList<int[]> prompts, SamplingOptions options, ITokenConstraint? constraint)
    {
        options.Validate();
        int batch = prompts.Count, promptLength = prompts[0].Length;
        if (prompts.Any(p => p.Length != promptLength)) throw new ArgumentException("prompts of one batch must have the same length");
        int context = model.Config.ContextLength, vocab = model.Config.VocabSize;
        foreach (var p in prompts) DecodingSequence.CheckIds(p, vocab, "prompt");
        if (promptLength >= context)
            throw new TianGongException($"prompt of {promptLength} tokens leaves no room in the model's context of {context}");
        int maxNew = Math.Min(options.MaxNewTokens, context - promptLength);
        var rowOptions = options with { MaxNewTokens = maxNew };
        int[] defaultEos = eosId is { } e ? [e] : [];
        var sequences = new DecodingSequence[batch];
        bool wasTraining = model.training;
        model.eval();
        try
        {
            for (int b = 0; b < batch; b++) sequences[b] = new DecodingSequence(rowOptions, vocab, defaultEos, tokenizer, prompts[b], constraint);
            using var _ = no_grad();
            using var cache = model.CreateCache(batch, promptLength + maxNew);
            var next = tensor(prompts.SelectMany(p => p).Select(i => (long)i).ToArray(), [batch, promptLength]); // (B, T), then (B, 1)
            var last = new long[batch];
            while (sequences.Any(s => !s.IsFinished))
            {
                using var scope = NewDisposeScope();
                var logits = model.forward(next, cache).select(1, -1);                             // (B, V)
                for (int b = 0; b < batch; b++)
                    if (!sequences[b].IsFinished) last[b] = sequences[b].Step(logits[b]).Token;
                next.Dispose();
                next = tensor(last).unsqueeze(1).MoveToOuterDisposeScope();
            }
            next.Dispose();
            return sequences;
        }
        catch
        {
            foreach (var s in sequences) s?.Dispose();
            throw;
        }
        finally
        {
            if (wasTraining) model.train();
        }
    }
}
