using TianGong.Models.Layers;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Tests.Models;

/// <summary>
/// The decode-attention kernel against libtorch's scaled_dot_product_attention over the same keys and values. Run the
/// suite with DOTNET_EnableAVX512=0 for the AVX2 path.
/// </summary>
public class DecodeAttentionTests
{
    private const int Capacity = 72;

    /// <summary>
    /// A per-row cache of one layer whose rows hold <paramref name="lengths"/> positions of random keys and values,
    /// written through libtorch's path (Append), with the call selecting all rows next.
    /// </summary>
    private static (KvCache Cache, Tensor[] Keys, Tensor[] Values) PerRowCache(int[] lengths, int kvHeads, int dim)
    {
        var cache = new KvCache(1, lengths.Length, kvHeads, Capacity, dim, ScalarType.Float32, CPU);
        cache.UsePerRowLengths();
        var keys = new Tensor[lengths.Length];
        var values = new Tensor[lengths.Length];
        for (int row = 0; row < lengths.Length; row++)
        {
            keys[row] = randn(1, kvHeads, lengths[row], dim);
            values[row] = randn(1, kvHeads, lengths[row], dim);
            if (lengths[row] == 0) continue;
            cache.SelectRows(row, 1);
            cache.NextSlots(lengths[row], CPU);
            cache.Append(0, keys[row], values[row]);
            cache.Advance(lengths[row]);
        }
        cache.SelectRows(0, lengths.Length);
        cache.NextSlots(1, CPU);
        return (cache, keys, values);
    }

    /// <summary>libtorch's attention of one query row over keys/values (1, kvHeads, S, D), repeated per group, within the window.</summary>
    private static Tensor Expected(Tensor q, Tensor keys, Tensor values, int groups, int? window)
    {
        var k = Attention.RepeatKv(keys, groups);
        var v = Attention.RepeatKv(values, groups);
        long s = keys.shape[2];
        long first = window is { } w ? Math.Max(0, s - w) : 0;
        return F.scaled_dot_product_attention(q, k.narrow(2, first, s - first), v.narrow(2, first, s - first));
    }

    private static void AssertClose(Tensor expected, Tensor actual, string what)
    {
        double diff = (expected - actual).abs().max().item<float>();
        Assert.True(diff <= 1e-5, $"{what}: differs by {diff}");
    }

    [Theory]
    [InlineData(64, 1, null)]   // GPT-2's head
    [InlineData(64, 2, null)]   // grouped-query attention
    [InlineData(20, 2, 5)]      // a window smaller than every row's length, a head size that is no whole number of vectors
    [InlineData(37, 4, 3)]
    public void Per_row_lengths_match_libtorch(int dim, int groups, int? window) => AssertMatchesLibtorch([7, 0, 19, 12], dim, groups, window);

    /// <summary>
    /// Longer caches: scores are reduced in blocks of 16 slots (8 with AVX2), so lengths under, at and just over a block
    /// and over several blocks, windows that cut a block, grouped queries (whose values are summed in chunks of 64 slots:
    /// 71 and 72 visible), head sizes of 8 (no whole AVX-512 vector), 80 (five) and 128.
    /// </summary>
    [Theory]
    [InlineData(64, 1, null)]
    [InlineData(8, 1, null)]
    [InlineData(80, 2, null)]
    [InlineData(128, 4, null)]
    [InlineData(64, 2, 20)]
    [InlineData(16, 4, 33)]
    [InlineData(37, 1, 17)]
    public void Lengths_over_several_blocks_match_libtorch(int dim, int groups, int? window) =>
        AssertMatchesLibtorch([6, 14, 15, 16, 30, 47, 0, 70], dim, groups, window);

    private static void AssertMatchesLibtorch(int[] lengths, int dim, int groups, int? window)
    {
        if (!DecodeAttention.Supported) return;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        manual_seed(dim + groups + lengths.Length);
        int batch = lengths.Length;
        const int kvHeads = 2;
        var (cache, keys, values) = PerRowCache(lengths, kvHeads, dim);
        using var owned = cache;
        // Two steps: the second sees the key and value the first stored at each row's slot.
        for (int step = 0; step < 2; step++)
        {
            var q = randn(batch, kvHeads * groups, 1, dim);
            // A query that is a strided view, as GPT-2's select from its fused qkv projection.
            if (step == 1) q = randn([batch, 1, 3, kvHeads * groups, dim]).permute(2, 0, 3, 1, 4).select(0, 1);
            var k = randn(batch, kvHeads, 1, dim);
            var v = randn(batch, kvHeads, 1, dim);
            var y = cache.TryAttendOne(0, q, k, v, groups, window);
            Assert.NotNull(y);
            Assert.Equal(new long[] { batch, kvHeads * groups, 1, dim }, y.shape);
            for (int r = 0; r < lengths.Length; r++)
            {
                keys[r] = cat([keys[r], k[r..(r + 1)]], 2);
                values[r] = cat([values[r], v[r..(r + 1)]], 2);
                AssertClose(Expected(q[r..(r + 1)], keys[r], values[r], groups, window), y[r..(r + 1)], $"step {step}, row {r}");
            }
            cache.Advance(1);
            cache.NextSlots(1, CPU);
        }
    }

    [Fact]
    public void A_shared_length_cache_matches_libtorch_and_attention_context_takes_the_kernel()
    {
        if (!DecodeAttention.Supported) return;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        manual_seed(3);
        const int batch = 3, kvHeads = 2, groups = 2, dim = 16, past = 9;
        using var cache = new KvCache(2, batch, kvHeads, Capacity, dim, ScalarType.Float32, CPU);
        var keys = randn(batch, kvHeads, past, dim);
        var values = randn(batch, kvHeads, past, dim);
        cache.NextSlots(past, CPU);
        cache.Append(1, keys, values);
        cache.Advance(past);
        var q = randn(batch, kvHeads * groups, 1, dim);
        var k = randn(batch, kvHeads, 1, dim);
        var v = randn(batch, kvHeads, 1, dim);
        using var context = AttentionContext.Create(batch, 1, CPU, attentionMask: null, positionIds: null, cache);
        var y = context.Attend(1, q, k, v, groups, window: null, dropout: 0);
        var expected = F.scaled_dot_product_attention(q, Attention.RepeatKv(cat([keys, k], 2), groups), Attention.RepeatKv(cat([values, v], 2), groups));
        AssertClose(expected, y, "shared length");
        // The kernel (not libtorch's Append) stored the new position: the context built no mask for it either.
        using var second = cache.TryAttendOne(1, q, k, v, groups, window: null);
        Assert.NotNull(second);
        Assert.True(second.equal(y).all().item<bool>(), "the same call twice");
    }

    [Theory]
    [InlineData(8, 1)]
    [InlineData(2, 4)]  // grouped queries, over more than one chunk of values
    public void A_rows_bits_do_not_depend_on_the_rest_of_the_batch(int kvHeads, int groups)
    {
        if (!DecodeAttention.Supported) return;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        manual_seed(5);
        // 16 rows × 8 heads × 64 over up to 66 positions: enough work for the kernel to use every thread.
        int[] lengths = Enumerable.Range(0, 16).Select(r => 5 + r * 4).ToArray();
        var (cache, _, _) = PerRowCache(lengths, kvHeads, 64);
        using var owned = cache;
        var q = randn(16, kvHeads * groups, 1, 64);
        var k = randn(16, kvHeads, 1, 64);
        var v = randn(16, kvHeads, 1, 64);
        var all = cache.TryAttendOne(0, q, k, v, groups, window: null)!;
        foreach (int r in new[] { 0, 7, 15 })
        {
            cache.SelectRows(r, 1);
            cache.NextSlots(1, CPU);
            var alone = cache.TryAttendOne(0, q[r..(r + 1)], k[r..(r + 1)], v[r..(r + 1)], groups, window: null)!;
            Assert.True(alone.equal(all[r..(r + 1)]).all().item<bool>(), $"row {r}");
        }
    }

    [Fact]
    public void Gradients_a_prompt_and_other_dtypes_take_libtorchs_path()
    {
        using var scope = NewDisposeScope();
        var (cache, _, _) = PerRowCache([3, 4], 2, 8);
        using var owned = cache;
        var q = randn(2, 2, 1, 8, requires_grad: true);
        var (k, v) = (randn(2, 2, 1, 8), randn(2, 2, 1, 8));
        Assert.Null(cache.TryAttendOne(0, q, k, v, 1, null));                                     // gradient wanted
        using (no_grad())
        {
            Assert.Null(cache.TryAttendOne(0, q.to(float64), k.to(float64), v.to(float64), 1, null));
            cache.NextSlots(2, CPU);
            Assert.Null(cache.TryAttendOne(0, randn(2, 2, 2, 8), randn(2, 2, 2, 8), randn(2, 2, 2, 8), 1, null)); // two tokens per row
        }
    }

    [Theory]
    [MemberData(nameof(TestModels.DecoderFamilies), MemberType = typeof(TestModels))]
    public void Greedy_decoding_takes_the_same_tokens_as_libtorchs_path(string family)
    {
        using var model = TestModels.Create(family);
        model.eval();
        // With gradients enabled the parameters' graph sends every product and the attention to libtorch.
        var (withKernel, kernelLogits) = Greedy(model, gradients: false);
        var (withLibtorch, libtorchLogits) = Greedy(model, gradients: true);
        Assert.True(withKernel.equal(withLibtorch).all().item<bool>());
        double diff = (kernelLogits - libtorchLogits).abs().max().item<float>();
        Assert.True(diff < 1e-4, $"logits differ by {diff}");
    }

    /// <summary>12 greedy tokens after a 5-token prompt, 2 rows, with a shared-length cache; the tokens and every step's logits.</summary>
    private static (Tensor Tokens, Tensor Logits) Greedy(TianGong.Models.CausalLM model, bool gradients)
    {
        using var grad = set_grad_enabled(gradients);
        return TestModels.GreedyDecode(model, tensor(new long[,] { { 1, 2, 3, 4, 5 }, { 9, 8, 7, 6, 5 } }), steps: 12, capacity: 24);
    }
}
