using TianGong.Models;
using TianGong.Tokenizers;

namespace TianGong.Inference;

/// <summary>
/// Decoding for encoder-decoder models: the source is encoded once, then the decoder starts from
/// decoder_start_token_id and adds one token per step (with a cache) until eos_token_id or max_new_tokens.
/// Like <see cref="TextGenerator"/>, only the model calls live here; each row's tokens are chosen by a <see cref="DecodingSequence"/>.
/// </summary>
public sealed class Seq2SeqGenerator
{
    private readonly Seq2SeqLM model;
    private readonly ITextTokenizer? tokenizer;

    public Seq2SeqGenerator(Seq2SeqLM model, ITextTokenizer? tokenizer = null)
    {
        this.model = model;
        this.tokenizer = tokenizer;
    }

    /// <summary>Encodes <paramref name="source"/> with the tokenizer, generates, and decodes the output.</summary>
    public GenerationResult Generate(string source, SamplingOptions options)
    {
        if (tokenizer is null) throw new TianGongException("Seq2SeqGenerator: text in and out needs a tokenizer; use GenerateIds");
        var ids = tokenizer.Encode(source);
        if (ids.Length == 0) throw new TianGongException("generate: the source text is empty");
        using var sequence = Decode([ids], options)[0];
        return new GenerationResult(sequence.Text(), [.. sequence.Generated], sequence.FinishReason!);
    }

    /// <summary>
    /// Generates for a batch of sources, which may differ in length: shorter ones are right-padded with pad_token_id and
    /// masked out of the encoder and of cross-attention. The end-of-sequence token ends a sequence and is not returned.
    /// </summary>
    public IReadOnlyList<GeneratedIds> GenerateIds(IReadOnlyList<int[]> sources, SamplingOptions options)
    {
        var sequences = Decode(sources, options);
        try { return [.. sequences.Select(GeneratedIds.Of)]; }
        finally { foreach (var s in sequences) s.Dispose(); }
    }

    private DecodingSequence[] Decode(IReadOnlyList<int[]> sources, SamplingOptions options)
    {
        options.Validate();
        if (sources.Count == 0 || sources.Any(s => s.Length == 0)) throw new TianGongException("generate: every source needs at least one token");
        int batch = sources.Count, sourceLength = sources.Max(s => s.Length), maxNew = options.MaxNewTokens;
        int vocab = model.Config.VocabSize;
        foreach (var s in sources) DecodingSequence.CheckIds(s, vocab, "source");
        long pad = model.PadTokenId ?? 0;
        var padded = sources.SelectMany(s => s.Select(i => (long)i).Concat(Enumerable.Repeat(pad, sourceLength - s.Length))).ToArray();
        var maskData = sources.SelectMany(s => Enumerable.Repeat(1L, s.Length).Concat(Enumerable.Repeat(0L, sourceLength - s.Length))).ToArray();
        int[] defaultEos = model.EosTokenId is { } e ? [e] : [];
        int start = model.DecoderStartTokenId;
        var sequences = new DecodingSequence[batch];
        bool wasTraining = model.training;
        model.eval();
        try
        {
            // The decoder start counts for the repetition penalty, as it does in HF's decoder_input_ids.
            for (int b = 0; b < batch; b++) sequences[b] = new DecodingSequence(options, vocab, defaultEos, tokenizer, [start], null);
            using var _ = no_grad();
            var device = model.ModelDevice;
            using var ids = tensor(padded, [batch, sourceLength], device: device);
            using var mask = tensor(maskData, [batch, sourceLength], device: device);
            using var encoded = model.Encode(ids, mask);                                      // (B, S, C)
            using var cache = model.CreateCache(batch, maxNew);
            var last = Enumerable.Repeat((long)start, batch).ToArray();
            while (sequences.Any(s => !s.IsFinished))
            {
                using var scope = NewDisposeScope();
                var logits = model.Decode(tensor(last, device: device).unsqueeze(1), encoded, mask, cache).select(1, -1); // (B, V)
                // All live rows in one call of the decoding core, as TextGenerator does: plain sampling runs batched.
                var steps = DecodingSequence.StepRows([.. sequences.Select(s => s.IsFinished ? null : s)], logits);
                for (int b = 0; b < batch; b++)
                {
                    if (steps[b].Error is { } error) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(error);
                    if (steps[b].Step is { } step) last[b] = step.Token;
                }
            }
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
