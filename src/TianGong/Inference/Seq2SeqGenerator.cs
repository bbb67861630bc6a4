using TianGong.Models;
using TianGong.Tokenizers;

namespace TianGong.Inference;

/// <summary>
/// Decoding for encoder-decoder models: the source is encoded once, then the decoder starts from
/// decoder_start_token_id and adds one token per step (with a cache) until eos_token_id or max_new_tokens.
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
        var tok = tokenizer ?? throw new TianGongException("Seq2SeqGenerator: text in and out needs a tokenizer; use GenerateIds");
        var ids = tok.Encode(source);
        if (ids.Length == 0) throw new TianGongException("generate: the source text is empty");
        var result = GenerateIds([ids], options)[0];
        return new GenerationResult(tok.Decode(result.Generated, skipSpecialTokens: true), result.Generated, result.FinishReason);
    }

    /// <summary>
    /// Generates for a batch of sources, which may differ in length: shorter ones are right-padded with pad_token_id and
    /// masked out of the encoder and of cross-attention. The end-of-sequence token ends a sequence and is not returned.
    /// </summary>
    public IReadOnlyList<TextGenerator.IdsResult> GenerateIds(IReadOnlyList<int[]> sources, SamplingOptions options)
    {
        options.Validate();
        if (sources.Count == 0 || sources.Any(s => s.Length == 0)) throw new TianGongException("generate: every source needs at least one token");
        if (options.StopStrings is { Count: > 0 }) throw new TianGongException("generate: stop strings are not supported for encoder-decoder models");
        int batch = sources.Count, sourceLength = sources.Max(s => s.Length), maxNew = options.MaxNewTokens;
        int vocab = model.Config.VocabSize;
        foreach (var id in sources.SelectMany(s => s))
            if (id < 0 || id >= vocab) throw new TianGongException($"generate: token id {id} is outside the vocabulary (0..{vocab - 1})");
        long pad = model.PadTokenId ?? 0;
        var padded = sources.SelectMany(s => s.Select(i => (long)i).Concat(Enumerable.Repeat(pad, sourceLength - s.Length))).ToArray();
        var maskData = sources.SelectMany(s => Enumerable.Repeat(1L, s.Length).Concat(Enumerable.Repeat(0L, sourceLength - s.Length))).ToArray();

        var generator = new torch.Generator((ulong)(options.Seed ?? Random.Shared.NextInt64()));
        var outputs = Enumerable.Range(0, batch).Select(_ => new List<int>()).ToArray();
        var finish = new string?[batch];
        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var _ = no_grad();
            using var ids = tensor(padded, [batch, sourceLength]);
            using var mask = tensor(maskData, [batch, sourceLength]);
            using var encoded = model.Encode(ids, mask);                                      // (B, S, C)
            using var cache = model.CreateCache(batch, maxNew);
            var decoded = full([batch, 1], (long)model.DecoderStartTokenId, ScalarType.Int64); // every decoder id so far, for the repetition penalty
            var next = decoded.alias();
            for (int i = 0; i < maxNew && finish.Any(f => f is null); i++)
            {
                using var scope = NewDisposeScope();
                var logits = model.Decode(next, encoded, mask, cache).select(1, -1).to(ScalarType.Float32); // (B, V)
                logits = LogitsProcessing.ApplyMinNewTokens(logits, model.EosTokenId, i, options.MinNewTokens);
                logits = LogitsProcessing.ApplyRepetitionPenalty(logits, decoded, options.RepetitionPenalty);
                var chosen = LogitsProcessing.Sample(logits, options.Temperature, options.TopK, options.TopP, generator); // (B)
                var chosenIds = chosen.data<long>().ToArray();
                for (int b = 0; b < batch; b++)
                {
                    if (finish[b] is not null) continue;
                    int token = (int)chosenIds[b];
                    if (options.StopAtEos && token == model.EosTokenId) { finish[b] = "stop"; continue; }
                    outputs[b].Add(token);
                }
                var grown = cat([decoded, chosen.unsqueeze(1)], dim: 1).MoveToOuterDisposeScope();
                decoded.Dispose();
                decoded = grown;
                next.Dispose();
                next = chosen.unsqueeze(1).MoveToOuterDisposeScope();                             // (B, 1)
            }
            decoded.Dispose();
            next.Dispose();
        }
        finally
        {
            if (wasTraining) model.train();
        }
        return outputs.Select((o, b) => new TextGenerator.IdsResult(o.ToArray(), finish[b] ?? "length")).ToList();
    }
}
