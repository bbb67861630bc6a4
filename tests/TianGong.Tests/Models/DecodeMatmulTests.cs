using System.Runtime.Intrinsics.X86;
using TianGong.Models;
using TianGong.Models.Layers;
using TorchSharp.Modules;

namespace TianGong.Tests.Models;

public class DecodeMatmulTests
{
    /// <summary>Whether this CPU runs the kernel (AVX-512, or AVX2 with FMA); run the suite with DOTNET_EnableAVX512=0 for the AVX2 path.</summary>
    private static bool Supported => Avx512F.IsSupported || (Avx2.IsSupported && Fma.IsSupported);

    public static IEnumerable<object[]> Shapes()
    {
        foreach (int rows in new[] { 1, 2, 3, 7, 8, 9, 16, DecodeMatmul.MaxRows })
            foreach (var (k, n) in new[] { (37, 129), (515, 37), (129, 515), (300, 48) })
                yield return [rows, k, n];
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Both_layouts_match_a_float64_product_with_and_without_bias(int rows, int depth, int width)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        manual_seed(rows * 1000 + depth + width);
        var x = randn(rows, depth);
        var w = randn(depth, width) / Math.Sqrt(depth); // (in, out)
        var bias = randn(width);
        foreach (var b in new[] { bias, null })
        {
            var expected = x.to(float64).matmul(w.to(float64));
            if (b is not null) expected += b.to(float64);
            var inOut = DecodeMatmul.TryInOut(x, w, b);
            var outIn = DecodeMatmul.TryOutIn(x, w.t().contiguous(), b);
            if (!Supported)
            {
                Assert.Null(inOut);
                Assert.Null(outIn);
                continue;
            }
            double scale = expected.abs().max().item<double>();
            foreach (var y in new[] { inOut!, outIn! })
            {
                Assert.Equal(new long[] { rows, width }, y.shape);
                double diff = (y.to(float64) - expected).abs().max().item<double>();
                Assert.True(diff <= 1e-5 * scale, $"differs by {diff} (scale {scale})");
            }
        }
    }

    [Theory]
    [InlineData(515, 129)]
    [InlineData(300, 2000)]  // several packed column blocks, two threads
    public void A_row_is_bit_identical_alone_and_among_sixteen(int depth, int width)
    {
        if (!Supported) return;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        manual_seed(7);
        var x = randn(16, depth);
        var w = randn(depth, width);
        var wt = w.t().contiguous();
        var bias = randn(width);
        var all = DecodeMatmul.TryInOut(x, w, bias)!;
        var allT = DecodeMatmul.TryOutIn(x, wt, bias)!;
        foreach (int r in new[] { 0, 5, 8, 15 })
        {
            var row = x[r].unsqueeze(0).clone();
            Assert.True(DecodeMatmul.TryInOut(row, w, bias)!.equal(all[r].unsqueeze(0)).all().item<bool>(), $"(in, out) row {r}");
            Assert.True(DecodeMatmul.TryOutIn(row, wt, bias)!.equal(allT[r].unsqueeze(0)).all().item<bool>(), $"(out, in) row {r}");
            // Rows 3..r+1 and the same weight at another address: alignment does not change a bit either.
            var shifted = empty(depth * width + 3)[3..].view(depth, width).copy_(w);
            var some = DecodeMatmul.TryInOut(x[3..(r + 1 > 3 ? r + 1 : 4)], shifted, bias)!;
            if (r >= 3) Assert.True(some[r - 3].equal(all[r]).all().item<bool>(), $"row {r} with a shifted weight");
        }
    }

    [Theory]
    [InlineData(1, 300, 97)]
    [InlineData(9, 129, 515)]
    [InlineData(16, 300, 97)]   // unpacked strips, a last narrow strip
    [InlineData(8, 130, 64)]    // aligned rows, one thread: a 48-column strip, then 16 columns read in place
    [InlineData(16, 300, 1040)] // aligned rows, two threads: shares of 512 and 528 columns (a 32-column strip in place)
    [InlineData(40, 129, 515)]  // packed blocks (AVX-512: above 32 rows)
    [InlineData(64, 515, 200)]
    [InlineData(32, 512, 300)]  // (out, in): W in three chunks of 128 rows, x in four blocks of 8 rows, eight tiles fetch ahead
    public void Every_path_keeps_the_documented_order_of_accumulation(int rows, int depth, int width)
    {
        if (!Supported) return;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        manual_seed(rows + depth + width);
        var x = randn(rows, depth);
        var w = randn(depth, width);
        var bias = randn(width);
        float[] xs = x.data<float>().ToArray(), ws = w.data<float>().ToArray(), bs = bias.data<float>().ToArray();
        float[] inOut = DecodeMatmul.TryInOut(x, w, bias)!.data<float>().ToArray();
        float[] outIn = DecodeMatmul.TryOutIn(x, w.t().contiguous(), bias)!.data<float>().ToArray();
        int lanes = Avx512F.IsSupported ? 16 : 8;
        var chains = new float[lanes];
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < width; j++)
            {
                // (in, out): one fused multiply-add chain per 128-row block of K from zero, the blocks added in order.
                float total = 0;
                for (int k0 = 0; k0 < depth; k0 += 128)
                {
                    float chain = 0;
                    for (int k = k0; k < Math.Min(depth, k0 + 128); k++) chain = MathF.FusedMultiplyAdd(xs[r * depth + k], ws[k * width + j], chain);
                    total = k0 == 0 ? chain : total + chain;
                }
                Assert.Equal(BitConverter.SingleToInt32Bits(total + bs[j]), BitConverter.SingleToInt32Bits(inOut[r * width + j]));
                // (out, in): one chain per lane over k ≡ lane (mod lanes), zero-padded, then adjacent lanes summed pairwise.
                Array.Clear(chains);
                for (int k = 0; k < (depth + lanes - 1) / lanes * lanes; k++)
                    chains[k % lanes] = k < depth ? MathF.FusedMultiplyAdd(xs[r * depth + k], ws[k * width + j], chains[k % lanes])
                        : MathF.FusedMultiplyAdd(0f, 0f, chains[k % lanes]);
                Assert.Equal(BitConverter.SingleToInt32Bits(Pairwise(chains, 0, lanes) + bs[j]), BitConverter.SingleToInt32Bits(outIn[r * width + j]));
            }
    }

    private static float Pairwise(float[] v, int start, int count) =>
        count == 1 ? v[start] : Pairwise(v, start, count / 2) + Pairwise(v, start + count / 2, count / 2);

    [Fact]
    public void Keeps_the_leading_shape_and_takes_a_strided_input()
    {
        if (!Supported) return;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        manual_seed(9);
        var hidden = randn(3, 5, 40);
        var last = hidden[.., 4..];                    // (3, 1, 40), not contiguous: the last position of a prompt
        Assert.False(last.is_contiguous());
        var w = randn(40, 70);
        var y = DecodeMatmul.TryInOut(last, w, null)!;
        Assert.Equal(new long[] { 3, 1, 70 }, y.shape);
        Assert.True(y.equal(DecodeMatmul.TryInOut(last.contiguous(), w, null)!).all().item<bool>());
        var logits = DecodeMatmul.TryOutIn(last, w.t().contiguous(), null)!;
        Assert.True(allclose(logits, y, rtol: 1e-5, atol: 1e-5));
    }

    [Fact]
    public void Products_that_want_a_gradient_are_left_to_libtorch()
    {
        using var scope = NewDisposeScope();
        manual_seed(5);
        var w = (randn(24, 40) * 0.1).requires_grad_();
        var x = randn(3, 24);
        Assert.Null(DecodeMatmul.TryInOut(x, w, null));
        var conv = new Conv1D(new Parameter(w.detach().clone()), new Parameter(zeros(40)));
        var y = conv.forward(x);
        Assert.True(y.equal(addmm(conv.Bias, x, conv.Weight, beta: 1, alpha: 1)).all().item<bool>());
        y.square().sum().backward();
        var expected = x.t().matmul(y.detach() * 2);
        Assert.True(allclose(conv.Weight.grad!, expected, rtol: 1e-5, atol: 1e-6));
        using (no_grad()) Assert.Equal(Supported, DecodeMatmul.TryInOut(x, w, null) is not null);
        Assert.Null(DecodeMatmul.TryInOut(randn(DecodeMatmul.MaxRows + 1, 24), w.detach(), null)); // prefill: libtorch
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void Greedy_decode_with_the_kernel_matches_the_libtorch_path(string family)
    {
        using var scope = NewDisposeScope();
        manual_seed(11);
        var config = family == "gpt2" ? (ICausalLMConfig)TestModels.Gpt2() : TestModels.Llama(tied: true);
        using var model = ModelConfigs.CreateCausalLM(config);
        model.InitializeWeights();
        model.eval();
        var prompt = randint(0, 64, [4, 5]);
        // Under autograd with parameters that want gradients every product goes to libtorch; under no_grad the
        // decode steps (4 rows) and the 20-row prefill take the kernel.
        TestModels.AssertKernelDecodeMatchesLibtorch(model, prompt);
    }
}

public class DecodeLinearTests
{
    [Fact]
    public void Draws_the_weights_nn_Linear_draws_and_keeps_its_keys()
    {
        using var scope = NewDisposeScope();
        manual_seed(21);
        var ours = new DecodeLinear(37, 19);
        manual_seed(21);
        var theirs = nn.Linear(37, 19);
        Assert.Equal(theirs.state_dict().Keys.OrderBy(k => k), ours.state_dict().Keys.OrderBy(k => k));
        Assert.True(ours.state_dict()["weight"].equal(theirs.weight!).all().item<bool>());
        Assert.True(ours.state_dict()["bias"].equal(theirs.bias!).all().item<bool>());
        Assert.Equal(["weight"], new DecodeLinear(4, 3, hasBias: false).state_dict().Keys);
        var x = randn(5, 37);
        using (no_grad()) Assert.True(allclose(ours.forward(x), theirs.forward(x), rtol: 1e-5, atol: 1e-6));
        Assert.True(ours.forward(x).equal(theirs.forward(x)).all().item<bool>()); // under autograd: libtorch's own product
    }

    [Fact]
    public void AlignWeights_moves_a_matrix_off_a_cache_line_onto_one_with_its_values_and_its_ties()
    {
        using var scope = NewDisposeScope();
        manual_seed(22);
        var linear = nn.Linear(48, 32);
        var block = randn(32 * 48 + 1);
        var misaligned = block.narrow(0, 1, 32 * 48).view(32, 48); // 4 bytes past libtorch's 64-byte-aligned start
        var weight = linear.weight!;
        using (no_grad())
        {
            var result = weight.set_(misaligned);
            if (!ReferenceEquals(result, weight)) result.Dispose();
        }
        var tied = weight.alias(); // another handle on the same tensor, as a tied head holds
        Assert.NotEqual(0, TensorMemory.DataPointer(weight) & 63);
        var expected = misaligned.clone();
        var biasBefore = TensorMemory.DataPointer(linear.bias!);

        Assert.Equal(1, DecodeMatmul.AlignWeights(linear)); // the 1-D bias stays where it is
        Assert.Same(weight, linear.weight);
        Assert.Equal(0, TensorMemory.DataPointer(weight) & 63);
        Assert.True(weight.requires_grad);
        Assert.True(weight.equal(expected).all().item<bool>());
        Assert.Equal(TensorMemory.DataPointer(weight), TensorMemory.DataPointer(tied));
        Assert.Equal(biasBefore, TensorMemory.DataPointer(linear.bias!));
        Assert.Equal(0, DecodeMatmul.AlignWeights(linear)); // nothing left to move
    }
}
