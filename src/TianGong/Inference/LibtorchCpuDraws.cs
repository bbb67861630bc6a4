using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace TianGong.Inference;

/// <summary>
/// The exponential draws libtorch's CPU <c>exponential_</c> makes from a <see cref="torch.Generator"/>, made here from a
/// copy of the generator's state, which is then written back advanced exactly as libtorch advances it. libtorch's CPU
/// generator is an MT19937 (at::mt19937: the reference algorithm, state of 624 32-bit words); <c>exponential_(1)</c> on
/// fp32 draws, per element in order, a 64-bit word from two outputs (first one high), keeps its low 53 bits as a uniform
/// x in [0, 1), and stores (float)(−log1p(−x)) (ATen's exponential_distribution&lt;double&gt;;
/// <c>LibtorchCpuDrawsTests</c> checks the draws and the state after them against libtorch's own).
/// Why by hand: sampling needs the draws of only the few tokens that can win (<see cref="LogitsProcessing.SampleRows"/>),
/// but libtorch makes all V, one at a time (about 20 ns each: a probe timed 320 µs for 16,384, so about 3 ms per token at
/// Qwen2's 151,936). Here each of the V uniforms costs two MT19937 outputs, made eight at a time, and the logarithm is taken only where needed;
/// a row that top-k filters tempers only its kept tokens' outputs (<see cref="SkipUniformBits"/>), and a
/// <see cref="DecodingSequence"/> keeps one of these between steps instead of reading and writing its generator every step.
/// </summary>
internal sealed partial class LibtorchCpuDraws
{
    private const int N = 624, M = 397;
    private const int StateBytes = 5056;                             // sizeof(CPUGeneratorImplState) on 64-bit Linux
    private const int LeftOffset = 8, NextOffset = 16, WordsOffset = 24; // legacy_pod.left (int), .next (uint64), .state[624] (uint64 each)

    private readonly torch.Generator generator;
    private readonly byte[] bytes;
    private readonly uint[] state = new uint[N];
    private int left, next;

    private LibtorchCpuDraws(torch.Generator generator, byte[] bytes)
    {
        this.generator = generator;
        this.bytes = bytes;
        left = BitConverter.ToInt32(bytes, LeftOffset);
        next = (int)BitConverter.ToUInt64(bytes, NextOffset);
        for (int i = 0; i < N; i++) state[i] = (uint)BitConverter.ToUInt64(bytes, WordsOffset + 8 * i);
    }

    /// <summary>The state of a CPU generator, or null where it is not laid out as libtorch's CPUGeneratorImplState (the caller names the problem).</summary>
    public static LibtorchCpuDraws? Read(torch.Generator generator)
    {
        using var serialized = generator.get_state();
        if (serialized.numel() != StateBytes || serialized.dtype != ScalarType.Byte) return null;
        var draws = new LibtorchCpuDraws(generator, serialized.bytes.ToArray());
        return draws.left is > 0 and <= N && draws.next is >= 0 and <= N ? draws : null;
    }

    /// <summary>
    /// The next <paramref name="uniforms"/>.Length elements' uniforms as their 53-bit integers (x = bits · 2⁻⁵³), two
    /// generator outputs each: what <c>exponential_</c> on that many elements would consume.
    /// </summary>
    public void NextUniformBits(Span<ulong> uniforms)
    {
        // The outputs are tempered straight into the uniforms' memory: output 2i is the low half of element i (little
        // endian), so swapping the halves puts it on top, as the 64-bit word is built.
        NextOutputs(MemoryMarshal.Cast<ulong, uint>(uniforms));
        const ulong Mask = (1UL << 53) - 1;
        int i = 0;
        if (BitConverter.IsLittleEndian && Vector256.IsHardwareAccelerated)
            for (; i + Vector256<ulong>.Count <= uniforms.Length; i += Vector256<ulong>.Count)
            {
                var pair = Vector256.Create(uniforms.Slice(i, Vector256<ulong>.Count));
                (((pair << 32) | (pair >>> 32)) & Vector256.Create(Mask)).CopyTo(uniforms.Slice(i, Vector256<ulong>.Count));
            }
        var outputs = MemoryMarshal.Cast<ulong, uint>(uniforms);
        for (; i < uniforms.Length; i++)
            uniforms[i] = (((ulong)outputs[2 * i] << 32) | outputs[2 * i + 1]) & Mask;
    }

    /// <summary>
    /// Advances the generator as <see cref="NextUniformBits"/> does for <paramref name="count"/> elements, but makes only the
    /// uniforms that a filtered row can use: those of the tokens in <paramref name="wanted"/> (ascending, each below
    /// <paramref name="count"/>) into <paramref name="wantedBits"/>, and the tokens whose uniform is 0 (x = 0, about one in
    /// 2⁵³), ascending, into <paramref name="zeros"/>. The state is still regenerated for every element (the next step's draws
    /// depend on it), but only the outputs used are tempered. Tempering maps 0 to 0 and nothing else to 0 (it is invertible),
    /// so a uniform is 0 exactly where its second (low) output's word is 0 and its first output's low 21 bits are 0:
    /// words of 0 are found with a vectorised search and only those pairs are tempered.
    /// </summary>
    public void SkipUniformBits(int count, ReadOnlySpan<int> wanted, Span<ulong> wantedBits, List<int> zeros)
    {
        const uint HighMask = (1u << 21) - 1;                                                // the high output's bits within 53
        long total = 2L * count, done = 0;
        int w = 0;
        uint carried = 0;               // the tempered high output of the element split across a regeneration (done odd)
        while (done < total)
        {
            if (left == 1)
            {
                Regenerate();
                left = N + 1;
            }
            int run = (int)Math.Min(total - done, left - 1);
            var words = state.AsSpan(next, run);                                                // outputs done..done+run−1
            long end = done + run;
            for (; w < wanted.Length && 2L * wanted[w] + 1 < end; w++)
            {
                long high = 2L * wanted[w];
                uint hi = high >= done ? Temper(words[(int)(high - done)]) : carried;
                wantedBits[w] = (((ulong)hi << 32) | Temper(words[(int)(high + 1 - done)])) & ((1UL << 53) - 1);
            }
            for (int from = 0, at; from < run && (at = words[from..].IndexOf(0u)) >= 0; from += at + 1)
            {
                long output = done + from + at;
                if ((output & 1) == 0) continue;                                                // a high output of 0: the low one decides
                uint hi = output - 1 >= done ? Temper(words[(int)(output - 1 - done)]) : carried;
                if ((hi & HighMask) == 0) zeros.Add((int)(output / 2));
            }
            if ((end & 1) == 1) carried = Temper(words[run - 1]);
            next += run;
            left -= run;
            done = end;
        }
    }

    private static uint Temper(uint y)
    {
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c5680u;
        y ^= (y << 15) & 0xefc60000u;
        return y ^ (y >> 18);
    }

    /// <summary>
    /// at::mt19937's operator() <paramref name="outputs"/>.Length times: each call first decrements left and regenerates
    /// the 624 words when it reaches 0, then tempers word next++. Here whole runs of words are tempered at once; after a
    /// regeneration left is taken as N + 1, so the run that follows leaves left and next where the calls would.
    /// </summary>
    private void NextOutputs(Span<uint> outputs)
    {
        int done = 0;
        while (done < outputs.Length)
        {
            if (left == 1)
            {
                Regenerate();
                left = N + 1;
            }
            int run = Math.Min(outputs.Length - done, left - 1);
            Temper(state.AsSpan(next, run), outputs.Slice(done, run));
            next += run;
            left -= run;
            done += run;
        }
    }

    private static void Temper(ReadOnlySpan<uint> words, Span<uint> outputs)
    {
        int i = 0;
        for (; i + Vector256<uint>.Count <= words.Length; i += Vector256<uint>.Count)
        {
            var y = Vector256.Create(words.Slice(i, Vector256<uint>.Count));
            y ^= y >>> 11;
            y ^= (y << 7) & Vector256.Create(0x9d2c5680u);
            y ^= (y << 15) & Vector256.Create(0xefc60000u);
            y ^= y >>> 18;
            y.CopyTo(outputs.Slice(i, Vector256<uint>.Count));
        }
        for (; i < words.Length; i++) outputs[i] = Temper(words[i]);
    }

    /// <summary>The exponential draw of a uniform's 53 bits, as libtorch stores it in fp32: (float)(−log1p(−x)).</summary>
    public static float Exponential(ulong bits) => (float)-Log1p(-(bits * (1.0 / (1UL << 53))));

    /// <summary>Writes the advanced state back into the generator (seed and cached normals as they were).</summary>
    public void WriteBack()
    {
        BitConverter.TryWriteBytes(bytes.AsSpan(LeftOffset, 4), left);
        BitConverter.TryWriteBytes(bytes.AsSpan(NextOffset, 8), (ulong)next);
        for (int i = 0; i < N; i++) BitConverter.TryWriteBytes(bytes.AsSpan(WordsOffset + 8 * i, 8), (ulong)state[i]);
        using var serialized = torch.tensor(bytes, ScalarType.Byte);
        generator.set_state(serialized);
    }

    /// <summary>
    /// at::mt19937's next_state: word p becomes word p + M (mod N, already new for p ≥ N − M) xor the twist of words p
    /// and p + 1 (still old). Those reads lie at least N − M = 227 words back or ahead, so 16 (or 8) words go at once.
    /// Sampling regenerates the state V / 312 times per token (52 times at a 16k vocabulary), so this loop is most of a
    /// sampled row's cost: it reads the array through a reference, the loop bounds keeping every block inside it.
    /// </summary>
    private void Regenerate()
    {
        left = N;
        next = 0;
        ref uint s = ref MemoryMarshal.GetArrayDataReference(state);
        int p = 0;
        if (Vector512.IsHardwareAccelerated)
            for (; p + 16 <= N - M; p += 16) TwistSixteen(ref s, p, p + M);
        for (; p + 8 <= N - M; p += 8) TwistEight(ref s, p, p + M);
        for (; p < N - M; p++) state[p] = state[p + M] ^ Twist(state[p], state[p + 1]);
        if (Vector512.IsHardwareAccelerated)
            for (; p + 16 <= N - 1; p += 16) TwistSixteen(ref s, p, p + M - N);
        for (; p + 8 <= N - 1; p += 8) TwistEight(ref s, p, p + M - N);
        for (; p < N - 1; p++) state[p] = state[p + M - N] ^ Twist(state[p], state[p + 1]);
        state[N - 1] = state[M - 1] ^ Twist(state[N - 1], state[0]);
    }

    /// <summary>Words p..p+7 of the regeneration (p + 8 ≤ N − 1 and far + 8 ≤ N: the caller's loop bounds).</summary>
    private static void TwistEight(ref uint s, int p, int far)
    {
        var u = Vector256.LoadUnsafe(ref s, (nuint)p);
        var v = Vector256.LoadUnsafe(ref s, (nuint)(p + 1));
        var mixed = ((u & Vector256.Create(0x80000000u)) | (v & Vector256.Create(0x7fffffffu))) >>> 1;
        var odd = Vector256<uint>.Zero - (v & Vector256<uint>.One);                     // all ones where v is odd
        (Vector256.LoadUnsafe(ref s, (nuint)far) ^ mixed ^ (odd & Vector256.Create(0x9908b0dfu))).StoreUnsafe(ref s, (nuint)p);
    }

    /// <summary><see cref="TwistEight"/> on words p..p+15 (p + 16 ≤ N − 1 and far + 16 ≤ N).</summary>
    private static void TwistSixteen(ref uint s, int p, int far)
    {
        var u = Vector512.LoadUnsafe(ref s, (nuint)p);
        var v = Vector512.LoadUnsafe(ref s, (nuint)(p + 1));
        var mixed = ((u & Vector512.Create(0x80000000u)) | (v & Vector512.Create(0x7fffffffu))) >>> 1;
        var odd = Vector512<uint>.Zero - (v & Vector512<uint>.One);
        (Vector512.LoadUnsafe(ref s, (nuint)far) ^ mixed ^ (odd & Vector512.Create(0x9908b0dfu))).StoreUnsafe(ref s, (nuint)p);
    }

    private static uint Twist(uint u, uint v) => (((u & 0x80000000u) | (v & 0x7fffffffu)) >> 1) ^ ((v & 1) != 0 ? 0x9908b0dfu : 0u);

    /// <summary>glibc's log1p, the one libtorch's std::log1p calls, so the double before the fp32 rounding is the same.</summary>
    [LibraryImport("libm.so.6", EntryPoint = "log1p")]
    private static partial double Log1p(double x);
}
