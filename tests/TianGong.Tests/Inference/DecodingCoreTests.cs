using TianGong.Inference;
using TianGong.Tests.Poetry;

namespace TianGong.Tests.Inference;

/// <summary>The decoding core on hand-made logits: each processor, the sampler's edges, finish reasons and id checks.</summary>
public class DecodingCoreTests
{
    // Four tokens "a" "b" "c" "d" and end-of-text (id 4).
    private static readonly ListTokenizer Abcd = ListTokenizer.Of("a", "b", "c", "d");

    private static DecodingSequence Sequence(SamplingOptions options, int[]? context = null, ITokenConstraint? constraint = null) =>
        new(options, Abcd.VocabSize, [Abcd.EosId], Abcd, context ?? [], constraint);

    private static Tensor Logits(params float[] values) => tensor(values);

    [Fact]
    public void Presence_and_frequency_penalties_subtract_per_occurrence_and_once()
    {
        using var logits = Logits(1, 1, 1, 1, 1).unsqueeze(0);
        using var penalized = LogitsProcessing.ApplyPresenceFrequencyPenalty(logits, [0, 0, 2], presence: 0.5, frequency: 0.25);
        Assert.Equal(new float[] { 1 - 0.5f - 0.5f, 1, 1 - 0.5f - 0.25f, 1, 1 }, penalized[0].data<float>().ToArray());
    }

    [Fact]
    public void Min_new_tokens_masks_every_end_of_sequence_id_until_enough_are_out()
    {
        using var logits = Logits(1, 2, 3, 4, 5).unsqueeze(0);
        using var held = LogitsProcessing.ApplyMinNewTokens(logits, [4, 2], generatedSoFar: 1, minNewTokens: 2);
        Assert.Equal(new[] { true, true, false, true, false }, held[0].isfinite().data<bool>().ToArray());
        using var free = LogitsProcessing.ApplyMinNewTokens(logits, [4, 2], generatedSoFar: 2, minNewTokens: 2);
        Assert.True(free[0].isfinite().all().item<bool>());

        // Through the core: greedy would end at once on eos (the largest logit), min_new_tokens 2 makes it wait.
        using var s = Sequence(new SamplingOptions(MaxNewTokens: 5, Temperature: 0, MinNewTokens: 2));
        Assert.Equal(3, s.Step(Logits(0, 0, 0, 1, 9)).Token);
        Assert.Equal(3, s.Step(Logits(0, 0, 0, 1, 9)).Token);
        var last = s.Step(Logits(0, 0, 0, 1, 9));
        Assert.Equal((4, false, "stop"), (last.Token, last.Appended, last.FinishReason));
        Assert.Equal([3, 3], s.Generated);
    }

    [Fact]
    public void Repetition_penalty_counts_the_context_as_well_as_the_output()
    {
        using var s = Sequence(new SamplingOptions(MaxNewTokens: 3, Temperature: 0, RepetitionPenalty: 4), context: [0]);
        Assert.Equal(1, s.Step(Logits(3, 1, 0, 0, -9)).Token);    // "a" in the prompt: 3 / 4 < 1
        Assert.Equal(2, s.Step(Logits(3, 3, 1, 0, -9)).Token);    // "a" and "b" are both seen now
    }

    [Fact]
    public void A_constraint_masks_tokens_and_one_that_leaves_none_is_a_clear_error()
    {
        var onlyC = new FixedConstraint(generated => generated.Count < 2 ? [false, false, true, false, false] : [false, false, false, false, false]);
        using var s = Sequence(new SamplingOptions(MaxNewTokens: 5, Temperature: 1, Seed: 1), constraint: onlyC);
        Assert.Equal(2, s.Step(Logits(9, 9, 0, 9, 9)).Token);
        Assert.Equal(2, s.Step(Logits(9, 9, 0, 9, 9)).Token);
        var e = Assert.Throws<TianGongException>(() => s.Step(Logits(9, 9, 0, 9, 9)));
        Assert.Equal("fixed: no token of the vocabulary can come next after 2 generated tokens", e.Message);
    }

    [Fact]
    public void Tiny_temperatures_are_greedy_and_never_produce_nan()
    {
        foreach (var t in new[] { 1e-300, 1e-8, 9e-6 })
        {
            using var s = Sequence(new SamplingOptions(MaxNewTokens: 4, Temperature: t, Seed: 1));
            for (int i = 0; i < 4; i++) Assert.Equal(1, s.Step(Logits(3, 3.0001f, -1, 2, -5)).Token);
            Assert.Equal("length", s.FinishReason);
        }
    }

    [Fact]
    public void Nan_logits_or_logits_that_allow_nothing_are_errors_of_that_sequence()
    {
        using var nan = Sequence(new SamplingOptions(Temperature: 1, Seed: 1));
        Assert.Contains("not finite", Assert.Throws<TianGongException>(() => nan.Step(Logits(1, float.NaN, 0, 0, 0))).Message);
        using var none = Sequence(new SamplingOptions(Temperature: 0));
        var ruledOut = Enumerable.Repeat(float.NegativeInfinity, 5).ToArray();
        Assert.Contains("every token is ruled out", Assert.Throws<TianGongException>(() => none.Step(Logits(ruledOut))).Message);
    }

    [Fact]
    public void Seeded_sampling_is_temperature_top_k_top_p_then_one_draw_from_the_sequences_generator()
    {
        var options = new SamplingOptions(MaxNewTokens: 20, Temperature: 0.7, TopK: 3, TopP: 0.9, Seed: 5, StopAtEos: false);
        using var s = Sequence(options);
        using var reference = new torch.Generator(5);
        using var logits = Logits(0.5f, 1.5f, 1.4f, 0.1f, 1.2f);
        for (int i = 0; i < 20; i++)
        {
            using var scope = NewDisposeScope();
            var filtered = LogitsProcessing.ApplyTopP(LogitsProcessing.ApplyTopK(logits.unsqueeze(0) / 0.7, 3), 0.9);
            int expected = (int)multinomial(filtered.softmax(-1), 1, generator: reference).item<long>();
            Assert.Equal(expected, s.Step(logits).Token);
        }
        Assert.True(s.Generated.Distinct().Count() > 1);
        Assert.DoesNotContain(0, s.Generated);                    // outside the top 3
    }

    /// <summary>
    /// The sequence keeps its generator's state between steps and tempers only the draws of top-k's few tokens: over a
    /// vocabulary of 3,000 (several regenerations of the generator per step), batched and alone, it still chooses what
    /// the ops with libtorch's multinomial choose from a generator of the same seed, step after step.
    /// </summary>
    [Fact]
    public void Seeded_sampling_over_a_large_vocabulary_follows_the_generator_step_after_step()
    {
        const int Vocab = 3000, Steps = 24;
        var options = new SamplingOptions(MaxNewTokens: Steps, Temperature: 0.8, TopK: 40, TopP: 0.95, Seed: 7, StopAtEos: false);
        using var alone = new DecodingSequence(options, Vocab, [], null, []);
        using var batched = new DecodingSequence(options, Vocab, [], null, []);
        using var other = new DecodingSequence(options with { Seed = 8 }, Vocab, [], null, []);
        using var reference = new torch.Generator(7);
        manual_seed(11);
        using var logits = randn(Steps, Vocab) * 2;                                             // (steps, V)
        for (int t = 0; t < Steps; t++)
        {
            using var scope = NewDisposeScope();
            var filtered = LogitsProcessing.ApplyTopP(LogitsProcessing.ApplyTopK(logits[t].unsqueeze(0) / 0.8, 40), 0.95);
            int expected = (int)multinomial(filtered.softmax(-1), 1, generator: reference).item<long>();
            Assert.Equal(expected, alone.Step(logits[t]).Token);
            var rows = DecodingSequence.StepRows([batched, other], stack([logits[t], logits[t]]));
            Assert.Equal(expected, rows[0].Step!.Token);
        }
        Assert.True(alone.Generated.Distinct().Count() > Steps / 2);
        Assert.NotEqual(alone.Generated, other.Generated);                                      // its own generator
    }

    [Fact]
    public void Stop_strings_finish_with_stop_and_cut_the_text_where_they_begin()
    {
        using var s = Sequence(new SamplingOptions(MaxNewTokens: 10, Temperature: 0, StopStrings: ["cd", "x"]));
        foreach (var token in new[] { 0, 2, 3 }) s.Step(Logits([.. Enumerable.Range(0, 5).Select(i => i == token ? 1f : 0f)]));
        Assert.Equal("stop", s.FinishReason);
        Assert.Equal("a", s.Text());
        Assert.Equal([0, 2, 3], s.Generated);
    }

    [Fact]
    public void Ids_outside_the_vocabulary_are_clear_errors()
    {
        Assert.Equal("prompt: token id 7 is outside the vocabulary [0, 4]",
            Assert.Throws<TianGongException>(() => DecodingSequence.CheckIds([1, 7], 5, "prompt")).Message);
    }

    [Fact]
    public void An_end_id_outside_the_vocabulary_never_ends_a_sequence_as_in_transformers()
    {
        using var s = Sequence(new SamplingOptions(MaxNewTokens: 3, Temperature: 0, EosTokenIds: [9]));
        Assert.Empty(s.EosIds);
        for (int i = 0; i < 3; i++) s.Step(Logits([1f, 0f, 0f, 0f, 0f]));
        Assert.Equal("length", s.FinishReason);
    }

    [Fact]
    public void Ids_past_the_tokenizers_vocabulary_are_never_chosen()
    {
        // A model whose embedding is padded to 8 ids for a tokenizer of 5.
        using var s = new DecodingSequence(new SamplingOptions(Temperature: 0), 8, [Abcd.EosId], Abcd, []);
        Assert.Equal(2, s.Step(Logits(0, 0, 1, 0, 0, 5, 6, 7)).Token);
    }

    private sealed class FixedConstraint(Func<IReadOnlyList<int>, bool[]> allowed) : ITokenConstraint
    {
        public string Description => "fixed";
        public bool[]? AllowedTokens(IReadOnlyList<int> generated) => allowed(generated);
        public bool IsComplete(IReadOnlyList<int> generated) => false;
    }
}
