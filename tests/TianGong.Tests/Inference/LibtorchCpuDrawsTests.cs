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

    [Fact]
    public void A_draw_of_zero_bits_is_zero_and_the_bound_holds()
    {
        Assert.Equal(0f, LibtorchCpuDraws.Exponential(0));
        // −log1p(−x) ≥ x: the bound the sampler prunes with, at the smallest, middling and largest uniforms.
        foreach (ulong bits in new ulong[] { 1, 2, 1UL << 20, 1UL << 52, (1UL << 53) - 1 })
            Assert.True(LibtorchCpuDraws.Exponential(bits) >= (float)(bits / (double)(1UL << 53)) * (1 - 1e-7f), bits.ToString());
    }
}
