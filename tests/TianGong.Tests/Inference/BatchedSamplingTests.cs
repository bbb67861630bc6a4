using TianGong.Inference;
using TianGong.Tests.Poetry;
using TianGong.Tokenizers;

namespace TianGong.Tests.Inference;

/// <summary>
/// The decoding core's batched path (<see cref="DecodingSequence.StepRows"/>) against its per-row path
/// (<see cref="DecodingSequence.Step"/>): the same tokens for the same seeds, row by row, for greedy and for sampling with
/// temperature, top-k and top-p; rows with processors or log-probabilities take the per-row path; a row's bad logits fail it alone.
/// </summary>
public class BatchedSamplingTests
{
    private const int Vocab = 97;

    private static DecodingSequence Row(SamplingOptions options, ITextTokenizer? tokenizer = null) =>
        new(options with { StopAtEos = false }, Vocab, [], tokenizer, [0]);

    public static IEnumerable<object[]> Options() =>
    [
        [new SamplingOptions(MaxNewTokens: 12, Temperature: 0)],
        [new SamplingOptions(MaxNewTokens: 12, Temperature: 1)],
        [new SamplingOptions(MaxNewTokens: 12, Temperature: 0.7, TopK: 20)],
        [new SamplingOptions(MaxNewTokens: 12, Temperature: 1.3, TopP: 0.9)],
        [new SamplingOptions(MaxNewTokens: 12, Temperature: 0.9, TopK: 40, TopP: 0.8)],
        [new SamplingOptions(MaxNewTokens: 12, Temperature: 1, RepetitionPenalty: 1.3)],  // a processor: the per-row path
    ];

    [Theory]
    [MemberData(nameof(Options))]
    public void Rows_sampled_together_choose_what_each_chooses_alone(SamplingOptions options)
    {
        const int rows = 6;
        manual_seed(3);
        using var logits = randn(options.MaxNewTokens, rows, Vocab) * 3;                     // (steps, B, V)
        var alone = Enumerable.Range(0, rows).Select(b => Row(options with { Seed = 100 + b })).ToArray();
        var together = Enumerable.Range(0, rows).Select(b => Row(options with { Seed = 100 + b })).ToArray();
        for (int t = 0; t < options.MaxNewTokens; t++)
        {
            var expected = alone.Select((s, b) => s.Step(logits[t][b]).Token).ToArray();
            var steps = DecodingSequence.StepRows(together, logits[t]);
            Assert.All(steps, s => Assert.Null(s.Error));
            Assert.Equal(expected, steps.Select(s => s.Step!.Token).ToArray());
        }
        Assert.All(together, s => Assert.Equal("length", s.FinishReason));
        foreach (var s in alone.Concat(together)) s.Dispose();
    }

    [Theory]
    [MemberData(nameof(Options))]
    public void Rows_of_a_padded_vocabulary_never_choose_past_the_tokenizer_and_choose_what_each_chooses_alone(SamplingOptions options)
    {
        const int rows = 4;
        var tokenizer = ListTokenizer.Of([.. Enumerable.Range(0, 40).Select(i => $"t{i}")]);   // the model's 97 ids pad it
        manual_seed(4);
        using var logits = randn(options.MaxNewTokens, rows, Vocab) * 3;
        logits.narrow(-1, tokenizer.VocabSize, Vocab - tokenizer.VocabSize).add_(10);          // the padding would win if allowed
        var alone = Enumerable.Range(0, rows).Select(b => Row(options with { Seed = 7 + b }, tokenizer)).ToArray();
        var together = Enumerable.Range(0, rows).Select(b => Row(options with { Seed = 7 + b }, tokenizer)).ToArray();
        for (int t = 0; t < options.MaxNewTokens; t++)
        {
            var expected = alone.Select((s, b) => s.Step(logits[t][b]).Token).ToArray();
            var chosen = DecodingSequence.StepRows(together, logits[t]).Select(s => s.Step!.Token).ToArray();
            Assert.Equal(expected, chosen);
            Assert.All(chosen, token => Assert.InRange(token, 0, tokenizer.VocabSize - 1));
        }
        foreach (var s in alone.Concat(together)) s.Dispose();
    }

    [Fact]
    public void A_large_batch_draws_its_rows_in_parallel_and_still_chooses_what_each_row_chooses_alone()
    {
        const int rows = 8, vocab = 16384;                                                      // rows × vocab ≥ 2^16: the parallel draws
        manual_seed(6);
        using var logits = randn(3, rows, vocab) * 2;
        var options = new SamplingOptions(MaxNewTokens: 3, Temperature: 0.8, TopP: 0.95, StopAtEos: false);
        var alone = Enumerable.Range(0, rows).Select(b => new DecodingSequence(options with { Seed = b }, vocab, [], null, [0])).ToArray();
        var together = Enumerable.Range(0, rows).Select(b => new DecodingSequence(options with { Seed = b }, vocab, [], null, [0])).ToArray();
        for (int t = 0; t < 3; t++)
        {
            var expected = alone.Select((s, b) => s.Step(logits[t][b]).Token).ToArray();
            Assert.Equal(expected, DecodingSequence.StepRows(together, logits[t]).Select(s => s.Step!.Token));
        }
        foreach (var s in alone.Concat(together)) s.Dispose();
    }

    [Fact]
    public void Rows_of_different_options_seeds_and_skipped_rows_each_get_their_own_token()
    {
        SamplingOptions[] mixed =
        [
            new(MaxNewTokens: 5, Temperature: 0), new(MaxNewTokens: 5, Temperature: 1, Seed: 7), new(MaxNewTokens: 5, Temperature: 0.5, TopK: 5, Seed: 8),
            new(MaxNewTokens: 5, Temperature: 1, Seed: 9, PresencePenalty: 1), new(MaxNewTokens: 5, Temperature: 1, Seed: 7),
        ];
        manual_seed(4);
        using var logits = randn(5, mixed.Length, Vocab) * 2;
        var alone = mixed.Select(o => Row(o)).ToArray();
        var together = mixed.Select(o => Row(o)).ToArray();
        for (int t = 0; t < 5; t++)
        {
            // Row 2 sits out the third step (as a finished or cancelled row would) in both runs.
            var expected = alone.Select((s, b) => t == 2 && b == 2 ? -1 : s.Step(logits[t][b]).Token).ToArray();
            var steps = DecodingSequence.StepRows([.. together.Select((s, b) => t == 2 && b == 2 ? null : s)], logits[t]);
            Assert.Equal(expected, steps.Select(s => s.Step?.Token ?? -1).ToArray());
        }
        foreach (var s in alone.Concat(together)) s.Dispose();
    }

    [Fact]
    public void Greedy_ties_go_to_the_first_maximum_as_argmax_does()
    {
        using var logits = zeros(2, Vocab);
        logits[0, 5] = tensor(3f);
        logits[0, 9] = tensor(3f);
        using var a = Row(new SamplingOptions(Temperature: 0));
        using var b = Row(new SamplingOptions(Temperature: 0));
        var steps = DecodingSequence.StepRows([a, b], logits);
        Assert.Equal([5, 0], steps.Select(s => s.Step!.Token));
    }

    [Fact]
    public void A_row_with_NaN_or_no_allowed_token_fails_alone_with_the_per_row_message()
    {
        using var logits = randn(3, Vocab);
        logits[0, 4] = tensor(float.NaN);
        logits[2].fill_(float.NegativeInfinity);
        var rows = Enumerable.Range(0, 3).Select(_ => Row(new SamplingOptions(Temperature: 1, Seed: 1))).ToArray();
        var steps = DecodingSequence.StepRows(rows, logits);
        Assert.Equal("generate: the model produced logits that are not finite (NaN or inf)", Assert.IsType<TianGongException>(steps[0].Error).Message);
        Assert.NotNull(steps[1].Step);
        Assert.Equal("generate: every token is ruled out (constraints, min_new_tokens and the vocabulary leave none)", Assert.IsType<TianGongException>(steps[2].Error).Message);
        Assert.Equal([], rows[0].Generated);
        foreach (var s in rows) s.Dispose();
    }

    [Fact]
    public void A_tokenizer_smaller_than_the_model_vocabulary_limits_batched_rows_as_it_limits_one()
    {
        var tokenizer = ListTokenizer.Of("a", "b", "c", "d");                                 // 5 ids of the model's 97
        manual_seed(5);
        using var logits = randn(4, Vocab);
        logits[.., 50] = tensor(100f);                                                          // beyond the tokenizer: never chosen
        var alone = Enumerable.Range(0, 4).Select(b => Row(new SamplingOptions(Temperature: b % 2, Seed: b), tokenizer)).ToArray();
        var together = Enumerable.Range(0, 4).Select(b => Row(new SamplingOptions(Temperature: b % 2, Seed: b), tokenizer)).ToArray();
        var expected = alone.Select((s, b) => s.Step(logits[b]).Token).ToArray();
        Assert.All(expected, t => Assert.InRange(t, 0, 4));
        Assert.Equal(expected, DecodingSequence.StepRows(together, logits).Select(s => s.Step!.Token));
        foreach (var s in alone.Concat(together)) s.Dispose();
    }
}
