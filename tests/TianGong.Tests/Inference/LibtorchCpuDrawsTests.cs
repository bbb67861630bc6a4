using TianGong.Inference;

namespace TianGong.Tests.Inference;

/// <summary>LibtorchCpuDraws against libtorch's own exponential_: the same fp32 draws, and the generator left in the same state.</summary>
public class LibtorchCpuDrawsTests
{
    [Theory]
    [InlineData(0UL, new[] { 1, 7, 311, 312, 313, 1000 })]          // 312 elements use up the first 624 outputs exactly
    [InlineData(42UL, new[] { 20000, 3, 16384 })]
    [InlineData((1UL << 40) + 7, new[] { 624, 625, 1 })]
    public void Draws_and_the_state_after_them_are_libtorchs(ulong seed, int[] lengths)
    {
        using var theirs = new torch.Generator(seed);
        using var ours = new torch.Generator(seed);
        foreach (int length in lengths)
        {
            using var expected = empty(length).exponential_(1, theirs);
            var draws = LibtorchCpuDraws.Read(ours);
            Assert.NotNull(draws);
            var bits = new ulong[length];
            draws!.NextUniformBits(bits);
            draws.WriteBack();
            var drawn = bits.Select(LibtorchCpuDraws.Exponential).ToArray();
            Assert.Equal(expected.data<float>().ToArray(), drawn);
            using var theirState = theirs.get_state();
            using var ourState = ours.get_state();
            Assert.Equal(theirState.data<byte>().ToArray(), ourState.data<byte>().ToArray());
        }
        // And libtorch goes on from the written-back state as from its own.
        using var next = empty(5).exponential_(1, theirs);
        using var nextOurs = empty(5).exponential_(1, ours);
        Assert.Equal(next.data<float>().ToArray(), nextOurs.data<float>().ToArray());
    }

    /// <summary>
    /// SkipUniformBits leaves the generator where exponential_ of that many elements leaves it, and gives the wanted
    /// tokens libtorch's draws, also from a position where each element's two outputs straddle a regeneration (an odd
    /// word index, as after another op drew one 32-bit output) and with a planted draw of 0.
    /// </summary>
    [Theory]
    [InlineData(3UL, 2, false)]
    [InlineData(5UL, 5, false)]       // odd: every 312th element's outputs lie on both sides of a regeneration
    [InlineData(9UL, 619, true)]      // the last words before a regeneration, with element 1's uniform planted as 0
    [InlineData(11UL, 7, true)]
    [InlineData(13UL, 623, false)]    // one word left: element 0's second output is the first after the regeneration
    public void Skipping_draws_only_the_wanted_ones_and_advances_as_libtorch(ulong seed, int start, bool plantZero)
    {
        const int Vocab = 5000, N = 624;
        using var theirs = new torch.Generator(seed);
        using var ours = new torch.Generator(seed);
        using (empty(400).exponential_(1, theirs)) { }                       // a regenerated state, 800 outputs in
        using var state = theirs.get_state();
        var bytes = state.bytes.ToArray();
        BitConverter.TryWriteBytes(bytes.AsSpan(8, 4), N + 1 - start);      // left, then next (left + next = N + 1): word `start` is the next output
        BitConverter.TryWriteBytes(bytes.AsSpan(16, 8), (ulong)start);
        if (plantZero)
        {
            // Element 1's outputs are words start + 2 and start + 3 (both in this state: start + 3 < N): tempering keeps 0.
            BitConverter.TryWriteBytes(bytes.AsSpan(24 + 8 * (start + 2), 8), 0UL);
            BitConverter.TryWriteBytes(bytes.AsSpan(24 + 8 * (start + 3), 8), 0UL);
        }
        using (var planted = tensor(bytes, ScalarType.Byte)) { theirs.set_state(planted); ours.set_state(planted); }
        using var expected = empty(Vocab).exponential_(1, theirs);
        var libtorch = expected.data<float>().ToArray();

        var wanted = new[] { 0, 1, 2, 311, 312, 313, 1000, 2495, 4999 };
        var bits = new ulong[wanted.Length];
        var zeros = new List<int>();
        var draws = LibtorchCpuDraws.Read(ours)!;
        draws.SkipUniformBits(Vocab, wanted, bits, zeros);
        draws.WriteBack();
        Assert.Equal(wanted.Select(v => libtorch[v]), bits.Select(LibtorchCpuDraws.Exponential));
        Assert.Equal(Enumerable.Range(0, Vocab).Where(v => libtorch[v] == 0), zeros);
        Assert.Equal(plantZero ? [1] : Array.Empty<int>(), zeros.ToArray());
        using var theirState = theirs.get_state();
        using var ourState = ours.get_state();
        Assert.Equal(theirState.data<byte>().ToArray(), ourState.data<byte>().ToArray());
    }

    [Fact]
    public void A_draw_of_zero_bits_is_zero_and_the_bound_holds()
    {
        Assert.Equal(0f, LibtorchCpuDraws.Exponential(0));
        // −log1p(−x) ≥ x: the bound the sampler prunes with, at the smallest, middling and largest uniforms.
        foreach (ulong bits in new ulong[] { 1, 2, 1UL << 20, 1UL << 52, (1UL << 53) - 1 })
            Assert.True(LibtorchCpuDraws.Exponential(bits) >= (float)(bits / (double)(1UL << 53)) * (1 - 1e-7f), bits.ToString());
    }
}
