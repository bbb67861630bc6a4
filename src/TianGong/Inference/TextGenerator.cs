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
        return Generate([prompt], options, constraint)[0];
    }

    /// <summary>
    /// Generates for a batch of prompts in one forward pass per step. Prompts of different lengths are left-padded, with
    /// the attention mask and positions transformers' generate() gives them, so each row decodes what its prompt decodes
    /// alone; each prompt samples with its own generator seeded from the options.
    /// </summary>
    public IReadOnlyList<GeneratedIds> GenerateIds(IReadOnlyList<int[]> prompts, SamplingOptions options, ITokenConstraint? constraint = null)
    {
        var sequences = Decode(prompts, options, constraint);
        try { return [.. sequences.Select(GeneratedIds.Of)]; }
        finally { foreach (var s in sequences) s.Dispose(); }
    }

    /// <summary>Text in and out for several prompts at once (see <see cref="GenerateIds"/>).</summary>
    public IReadOnlyList<GenerationResult> Generate(IReadOnlyList<string> prompts, SamplingOptions options, ITokenConstraint? constraint = null)
    {
        var tokenizer = this.tokenizer ?? throw new TianGongException("TextGenerator: text in and out needs a tokenizer; use GenerateIds");
        var ids = prompts.Select(p => tokenizer.Encode(p) is { Length: > 0 } e ? e : [tokenizer.BosId]).ToList();
        var sequences = Decode(ids, options, constraint);
        try { return [.. sequences.Select(s => new GenerationResult(s.Text(), [.. s.Generated], s.FinishReason!))]; }
        finally { foreach (var s in sequences) s.Dispose(); }
    }

    /// <summary>
    /// The batch loop: a finished row keeps feeding its last token until every row is done (its output no longer changes).
    /// </summary>
    private DecodingSequence[] Decode(IReadOnlyList<int[]> prompts, SamplingOptions options, ITokenConstraint? constraint)
    {
        options.Validate();
        if (prompts.Count == 0 || prompts.Any(p => p.Length == 0)) throw new TianGongException("generate: every prompt needs at least one token");
        int batch = prompts.Count, promptLength = prompts.Max(p => p.Length);
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
            var device = model.ModelDevice;
            using var padding = LeftPadding.Of(prompts, padId: defaultEos.FirstOrDefault(), device);
            var next = padding.Ids.alias();                                                        // (B, T), then (B, 1)
            var last = new long[batch];
            while (sequences.Any(s => !s.IsFinished))
            {
                using var scope = NewDisposeScope();
                var input = new DecoderInput { InputIds = next, Cache = cache, AttentionMask = padding.Mask, PositionIds = padding.NextPositions(next.shape[1]) };
                var logits = model.Forward(input).Logits.select(1, -1);                             // (B, V)
                // All live rows in one call of the decoding core: plain sampling then runs batched, not several ops per row.
                var steps = DecodingSequence.StepRows([.. sequences.Select(s => s.IsFinished ? null : s)], logits);
                for (int b = 0; b < batch; b++)
                {
                    if (steps[b].Error is { } error) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(error);
                    if (steps[b].Step is { } step) last[b] = step.Token;
                }
                next.Dispose();
                next = tensor(last, device: device).unsqueeze(1).MoveToOuterDisposeScope();
                padding.Grow();
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

/// <summary>
/// Prompts of different lengths in one batch, left-padded as transformers' generate() pads them: the attention mask marks
/// the padding, and positions count each row's real tokens only. For prompts of one length there is no mask at all,
/// so that path stays exactly the unpadded one.
/// </summary>
internal sealed class LeftPadding : IDisposable
{
    private Tensor? mask; // (B, S): every key slot so far, 1 = token

    private LeftPadding(Tensor ids, Tensor? mask) => (Ids, this.mask) = (ids, mask);

    /// <summary>(B, T) the prompts, padded on the left to the longest.</summary>
    public Tensor Ids { get; }

    public Tensor? Mask => mask;

    public static LeftPadding Of(IReadOnlyList<int[]> prompts, int padId, Device device)
    {
        int length = prompts.Max(p => p.Length);
        var ids = prompts.SelectMany(p => Enumerable.Repeat((long)padId, length - p.Length).Concat(p.Select(i => (long)i))).ToArray();
        var padded = tensor(ids, [prompts.Count, length], device: device);
        if (prompts.All(p => p.Length == length)) return new LeftPadding(padded, null);
        var flags = prompts.SelectMany(p => Enumerable.Repeat(0L, length - p.Length).Concat(Enumerable.Repeat(1L, p.Length))).ToArray();
        return new LeftPadding(padded, tensor(flags, [prompts.Count, length], device: device));
    }

    /// <summary>Positions of the newest <paramref name="t"/> tokens, or null when no row is padded (positions are the slots).</summary>
    public Tensor? NextPositions(long t) => mask is null ? null : Models.Layers.AttentionContext.PositionsFromMask(mask, t);

    /// <summary>Every row gains one real token.</summary>
    public void Grow()
    {
        if (mask is null) return;
        var grown = cat([mask, ones([mask.shape[0], 1], ScalarType.Int64, mask.device)], dim: 1).DetachFromDisposeScope();
        mask.Dispose();
        mask = grown;
    }

    public void Dispose()
    {
        Ids.Dispose();
        mask?.Dispose();
    }
}
