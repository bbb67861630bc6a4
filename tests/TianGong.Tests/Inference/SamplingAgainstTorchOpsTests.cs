using TianGong.Inference;

namespace TianGong.Tests.Inference;

/// <summary>
/// <see cref="LogitsProcessing.SampleRows"/> chooses with loops over the logits' memory; these check it against the libtorch
/// ops it replaced (temperature, <see cref="LogitsProcessing.ApplyTopK"/>, <see cref="LogitsProcessing.ApplyTopP"/>, softmax,
/// multinomial with the row's generator): the same token for the same seed, draw after draw, over many random rows.
/// </summary>
public class SamplingAgainstTorchOpsTests
{
    public static IEnumerable<object[]> Settings() =>
    [
        [1.0, 0, 1.0, 97],
        [0.7, 0, 1.0, 454],
        [1.0, 40, 0.95, 454],                                // the served default of the bench's generation_config.json
        [1.3, 0, 0.9, 454],
        [0.5, 5, 1.0, 2000],
        [0.9, 50, 0.8, 2000],
        [1.0, 0, 0.3, 97],
        [1.0, 0, 1.0, 16384],                                // every token a candidate: the pruned argmax over 16,384
        [0.8, 40, 0.95, 16384],
    ];

    [Theory]
    [MemberData(nameof(Settings))]
    public void Seeded_rows_draw_the_tokens_the_torch_ops_draw(double temperature, int topK, double topP, int vocab)
    {
        const int rows = 4, steps = 40;
        var options = new SamplingOptions(Temperature: temperature, TopK: topK, TopP: topP);
        manual_seed(vocab + topK);
        using var logits = randn(steps, rows, vocab) * 3;                                       // (steps, B, V)
        var ours = Enumerable.Range(0, rows).Select(b => new torch.Generator((ulong)(10 + b))).ToArray();
        var reference = Enumerable.Range(0, rows).Select(b => new torch.Generator((ulong)(10 + b))).ToArray();
        int distinct = 0;
        for (int t = 0; t < steps; t++)
        {
            using var scope = NewDisposeScope();
            var tokens = LogitsProcessing.SampleRows(logits[t], options, ours);
            for (int b = 0; b < rows; b++)
            {
                var filtered = LogitsProcessing.ApplyTopP(LogitsProcessing.ApplyTopK(logits[t][b].unsqueeze(0) / temperature, topK), topP);
                int expected = (int)multinomial(filtered.softmax(-1), 1, generator: reference[b]).item<long>();
                Assert.Null(tokens[b].Error);
                Assert.Equal(expected, tokens[b].Token);
                if (tokens[b].Token != logits[t][b].argmax().item<long>()) distinct++;
            }
        }
        Assert.True(distinct > 0, "sampling never left the argmax: the comparison would not tell sampling from greedy");
        foreach (var g in ours.Concat(reference)) g.Dispose();
    }

    /// <summary>
    /// Top-k over a large vocabulary finds its k-th largest logit from block maxima and a sort of the values above their
    /// floor; with logits rounded to quarters (hundreds of ties at the boundary, counted as topk counts them) it keeps the
    /// tokens the ops keep, and chooses what they choose.
    /// </summary>
    [Theory]
    [InlineData(40)]
    [InlineData(64)]
    public void Top_k_over_tied_logits_of_a_large_vocabulary_keeps_what_the_ops_keep(int topK)
    {
        const int Vocab = 16384, Rows = 3, Steps = 12;
        var options = new SamplingOptions(Temperature: 1, TopK: topK);
        manual_seed(topK);
        using var logits = (randn(Steps, Rows, Vocab) * 8).round() / 4;                          // (steps, B, V), steps of 0.25
        var ours = Enumerable.Range(0, Rows).Select(b => new torch.Generator((ulong)(20 + b))).ToArray();
        var reference = Enumerable.Range(0, Rows).Select(b => new torch.Generator((ulong)(20 + b))).ToArray();
        for (int t = 0; t < Steps; t++)
        {
            using var scope = NewDisposeScope();
            var tokens = LogitsProcessing.SampleRows(logits[t], options, ours);
            for (int b = 0; b < Rows; b++)
            {
                var filtered = LogitsProcessing.ApplyTopK(logits[t][b].unsqueeze(0), topK);
                int expected = (int)multinomial(filtered.softmax(-1), 1, generator: reference[b]).item<long>();
                Assert.Equal(expected, tokens[b].Token);
            }
        }
        foreach (var g in ours.Concat(reference)) g.Dispose();
    }

    /// <summary>
    /// A padded vocabulary (ids from <c>allowedBelow</c> on ruled out without a copy of the logits) with top-k over the
    /// allowed ids alone: k below them and k past them (every allowed id kept) choose what the ops choose on logits whose
    /// padding is −inf.
    /// </summary>
    [Theory]
    [InlineData(1500, 40)]
    [InlineData(50, 60)]
    [InlineData(50, 50)]
    public void Top_k_under_a_padded_vocabulary_chooses_what_the_ops_choose_on_the_masked_logits(int allowed, int topK)
    {
        const int Vocab = 2000, Rows = 2, Steps = 10;
        var options = new SamplingOptions(Temperature: 0.9, TopK: topK, TopP: 0.97);
        manual_seed(allowed + topK);
        using var logits = randn(Steps, Rows, Vocab) * 3;
        using var masked = logits.clone();
        masked.narrow(-1, allowed, Vocab - allowed).fill_(float.NegativeInfinity);
        var ours = Enumerable.Range(0, Rows).Select(b => new torch.Generator((ulong)(30 + b))).ToArray();
        var reference = Enumerable.Range(0, Rows).Select(b => new torch.Generator((ulong)(30 + b))).ToArray();
        for (int t = 0; t < Steps; t++)
        {
            using var scope = NewDisposeScope();
            var tokens = LogitsProcessing.SampleRows(logits[t], options, ours, allowedBelow: allowed);
            for (int b = 0; b < Rows; b++)
            {
                var filtered = LogitsProcessing.ApplyTopP(LogitsProcessing.ApplyTopK(masked[t][b].unsqueeze(0) / 0.9, topK), 0.97);
                int expected = (int)multinomial(filtered.softmax(-1), 1, generator: reference[b]).item<long>();
                Assert.Equal(expected, tokens[b].Token);
                Assert.InRange(tokens[b].Token, 0, allowed - 1);
            }
        }
        foreach (var g in ours.Concat(reference)) g.Dispose();
    }

    [Fact]
    public void Greedy_picks_libtorchs_argmax_with_ties_signed_zeros_and_the_vector_tail()
    {
        var rows = new List<float[]>();
        foreach (int length in new[] { 5, 16, 37 })                                     // below, at and past two vectors
        {
            var ties = Enumerable.Repeat(-1f, length).ToArray();
            ties[length / 3] = ties[length - 1] = 2f;                                  // equal maxima: the first
            var zeros = Enumerable.Repeat(-1f, length).ToArray();
            zeros[1] = -0f;
            zeros[length - 2] = 0f;                                                    // −0 before +0: the first of the two
            var last = Enumerable.Range(0, length).Select(i => (float)i).ToArray();    // the maximum in the tail
            rows.AddRange([ties, zeros, last]);
        }
        var greedy = new SamplingOptions(Temperature: 0);
        foreach (var row in rows)
        {
            using var logits = tensor(row).unsqueeze(0);
            var (token, error) = LogitsProcessing.SampleRows(logits, greedy, [new torch.Generator(1)])[0];
            Assert.Null(error);
            Assert.Equal(logits.argmax(-1).item<long>(), token);
        }
        var withNaN = Enumerable.Repeat(0f, 20).ToArray();
        withNaN[13] = float.NaN;
        using var nanLogits = tensor(withNaN).unsqueeze(0);
        Assert.NotNull(LogitsProcessing.SampleRows(nanLogits, greedy, [new torch.Generator(1)])[0].Error);
    }

    [Fact]
    public void Top_k_keeps_ties_with_the_kth_value_and_top_p_cuts_ties_in_index_order_as_the_ops_do()
    {
        // Logits 3, 1, 3, 3: top-k 2 keeps all three 3s (as logits < kth does); top-p 1e-9 keeps only the first 3 in
        // falling order, which for equal logits is the lowest index, as ApplyTopP's sort leaves it.
        using var logits = tensor(new float[] { 3, 1, 3, 3 }).unsqueeze(0);
        using var generator = new torch.Generator(1);
        var seen = new HashSet<int>();
        for (int i = 0; i < 50; i++)
            seen.Add(LogitsProcessing.SampleRows(logits, new SamplingOptions(Temperature: 1, TopK: 2), [generator])[0].Token);
        Assert.Equal([0, 2, 3], seen.Order());
        using var kept = LogitsProcessing.ApplyTopP(logits, 1e-9);
        Assert.Equal(new[] { true, false, false, false }, kept[0].isfinite().data<bool>().ToArray());
        for (int i = 0; i < 20; i++)
            Assert.Equal(0, LogitsProcessing.SampleRows(logits, new SamplingOptions(Temperature: 1, TopP: 1e-9), [generator])[0].Token);
    }
}
