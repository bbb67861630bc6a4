using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace TianGong.Models.Layers;

/// <summary>
/// y = x·W + b in fp32 for a few rows of x (decode steps of 1 to <see cref="MaxRows"/> sequences, short prompts) on
/// the CPU, with AVX-512 (this file) or AVX2 + FMA (DecodeMatmul.Avx2.cs: the same loops on 8-lane vectors).
/// libtorch hands such products to MKL, whose gemv read the weights at 8–18 GB/s at batch 1 (STREAM triad on the
/// measured 2-core AMD EPYC: ~30 GB/s) and whose small-M sgemm ran at 20–60 GFLOP/s at batch 16 (its 2048³ product:
/// 120–160 GFLOP/s), about as fast with one thread as with two; TorchSharp 0.107 exposes neither a prepacked GEMM nor
/// a way to pick MKL's kernel. Here the same products run 1.2–4× faster at 1–64 rows, except a few memory-bound
/// batch-1 shapes that stay at libtorch's speed (docs/benchmarks.md, "Decode matmul kernel"). An inference kernel
/// for those shapes, not a tensor library: everything else goes to libtorch.
/// <para>
/// Layouts: W (in, out), GPT-2's Conv1D, and W (out, in), nn.Linear and a tied LM head. For (in, out) one row of x
/// streams blocks of 128 whole rows of W (each block one contiguous run the prefetcher follows; threads split the
/// blocks); more rows copy a 128×768 block of W at a time into per-thread scratch as 48-column panels (GotoBLAS's
/// packing, without a persistent packed copy: training may update the weight in place at any time) and run 8×48
/// register tiles over it from L2; up to 32 rows (16 with AVX2) the tiles read W in place instead, 48 columns at a
/// time down all of K, as a block then serves too few tiles to repay its copy (threads split the columns in 16-column
/// units there, and a share's last strip of 16 or 32 columns takes a tile of that width). For (out, in) every output
/// is a dot product along K: 4×4 tiles of (rows of x) × (rows of W), 16 lanes along K, the tile's sixteen sums taken
/// at once; W goes in 256 KB chunks (kept in L2), over which blocks of 8 rows of x (kept in L1) pass in turn.
/// </para>
/// <para>
/// Deterministic and batch-invariant: every output is accumulated in one fixed order whatever the number of rows,
/// the tile a row falls in, the thread count or the memory's alignment ((in, out): one fused multiply-add chain per
/// output within each 128-row block of K, the blocks' sums added in block order; (out, in): sixteen chains over
/// k ≡ j mod 16, then a fixed horizontal sum), then the bias is added. So a sequence's logits do not depend on which
/// other sequences share its decode step, nor on whether the weights were memory-mapped or copied.
/// </para>
/// <para>
/// Layers call it in eval mode only: a training block can run under no_grad too (Recompute.Full's first forward, whose
/// recomputation with grad must give the same bits, or the gradients drift from the plain graph's).
/// </para>
/// </summary>
[SkipLocalsInit]
public static unsafe partial class DecodeMatmul
{
    /// <summary>
    /// Products of up to this many rows take the kernel; more (a prompt's prefill) go to libtorch, whose sgemm is at
    /// its peak there. Chosen by measurement (docs/benchmarks.md, "Decode matmul kernel").
    /// </summary>
    public const int MaxRows = 64;

    private const int Lanes = 16;             // floats per 512-bit vector
    private const int PanelWidth = 48;        // columns of a packed panel: three vectors, the width of a register tile
    private const int TileRows = 8;           // rows of x per (in, out) register tile: 8 × 3 = 24 accumulators
    private const int BlockDepth = 128;       // rows of W packed at a time (k)
    private const int BlockWidth = 768;       // columns of W packed at a time: 3 KB runs per row, 384 KB of scratch
    private const int DotWidth = 4;           // rows of W per (out, in) tile
    private const int DotBlockRows = 8;       // (out, in) rows of x per pass over a chunk of W (16 KB at K = 512: L1)
    private const int DotChunkBytes = 256 * 1024; // (out, in) bytes of W per chunk, kept in L2 while x passes (128 KB, 512 KB: no better)
    private const int DotRows = 4;            // rows of x per (out, in) tile: 4 × 4 = 16 accumulators
    private const int DirectRows = 32;        // (in, out) products of up to this many rows read W unpacked (four tiles)
    private const long ParallelWork = 1 << 18; // multiply-adds below which a second thread costs more than it saves

    /// <summary>y = x·W + b with W stored (in, out), as GPT-2's Conv1D; null when the kernel does not apply.</summary>
    public static Tensor? TryInOut(Tensor x, Tensor weight, Tensor? bias) => TryMultiply(x, weight, bias, inOut: true);

    /// <summary>y = x·Wᵀ + b with W stored (out, in), as nn.Linear and a tied LM head; null when the kernel does not apply.</summary>
    public static Tensor? TryOutIn(Tensor x, Tensor weight, Tensor? bias) => TryMultiply(x, weight, bias, inOut: false);

    /// <summary>
    /// Gives every fp32 CPU matrix of <paramref name="model"/> whose data does not start on a 64-byte cache line a copy
    /// that does, in place (the same Parameter, its storage swapped by <c>set_</c>, so tied weights stay tied), and returns
    /// how many it moved. A model loaded from a folder holds views of the memory-mapped safetensors file, whose tensors
    /// are 8-byte aligned at most (the reference writer pads the header to 8); the 2–32-row (in, out) products read W
    /// in place only when its rows start on a line (<see cref="LinesAligned"/>) and pack it block by block on every
    /// product otherwise. The copies share one block on 2 MiB transparent huge pages (MADV_HUGEPAGE; Debian's THP mode
    /// is "madvise"), each matrix on a 4 KiB boundary: copied into ordinary 4 KiB pages one by one, the matrices made
    /// one-stream decoding 15–25 % slower than reading the file's page-cache pages (docs/benchmarks.md, "Aligned
    /// weights"). Not done at load: the copy costs 1.6–3.5 s per 2 GB (bench `align`) against ~0.5 s for the whole mapped load,
    /// and one-row decoding (the CLI's generate) reads W the same way either way; the serving engine, which batches,
    /// calls it once. The mapped pages a copy replaces are clean file pages, which the kernel reclaims when memory is short.
    /// </summary>
    public static int AlignWeights(nn.Module model)
    {
        using var _ = no_grad();
        var moving = new List<TorchSharp.Modules.Parameter>();
        var seen = new HashSet<TorchSharp.Modules.Parameter>(ReferenceEqualityComparer.Instance);
        foreach (var (_, p) in model.named_parameters())
            if (p.device_type == DeviceType.CPU && p.dtype == ScalarType.Float32 && p.dim() == 2 && p.is_contiguous()
                && (TensorMemory.DataPointer(p) & 63) != 0 && seen.Add(p)) moving.Add(p);
        if (moving.Count == 0) return 0;
        const long Page = 1024, Huge = 512 * 1024;          // floats: 4 KiB, 2 MiB
        long total = moving.Sum(p => (p.numel() + Page - 1) / Page * Page);
        using var block = empty(total + Huge, ScalarType.Float32); // not touched yet: the advice comes before the first write
        long address = TensorMemory.DataPointer(block), start = ((address + Huge * 4 - 1) & ~(Huge * 4 - 1)) - address;
        HugePages(address + start, total * 4);
        long offset = start / 4;
        foreach (var p in moving)
        {
            using var region = block.narrow(0, offset, p.numel()); // every handle on the block disposed here, or the block
            using var slot = region.view(p.shape);                  // outlives the model until the GC finalizes the handle
            slot.copy_(p);
            var result = p.set_(slot);
            if (!ReferenceEquals(result, p)) result.Dispose(); // a second handle to p (TorchSharp versions differ), never p itself
            offset += (p.numel() + Page - 1) / Page * Page;
        }
        return moving.Count;
    }

    private static void HugePages(long address, long bytes)
    {
        if (OperatingSystem.IsLinux()) madvise((nint)address, (nint)bytes, 14); // MADV_HUGEPAGE; ignored where THP is off
    }

    [System.Runtime.InteropServices.LibraryImport("libc")]
    private static partial int madvise(nint address, nint length, int advice);

    /// <summary>
    /// Whether the kernel takes this product (given 1 to <see cref="MaxRows"/> rows): AVX-512, or AVX2 with FMA, on the
    /// CPU, fp32 throughout, a contiguous 2-D weight, no gradient wanted. Otherwise the caller's libtorch product runs.
    /// </summary>
    public static bool Multiplies(Tensor x, Tensor weight, Tensor? bias) =>
        (Avx512F.IsSupported || (Avx2.IsSupported && Fma.IsSupported))
        && x.device_type == DeviceType.CPU && weight.device_type == DeviceType.CPU
        && x.dtype == ScalarType.Float32 && weight.dtype == ScalarType.Float32 && weight.dim() == 2 && weight.is_contiguous()
        && (bias is null || (bias.dtype == ScalarType.Float32 && bias.device_type == DeviceType.CPU && bias.dim() == 1))
        && !(is_grad_enabled() && (x.requires_grad || weight.requires_grad || (bias?.requires_grad ?? false)));

    private static Tensor? TryMultiply(Tensor x, Tensor weight, Tensor? bias, bool inOut)
    {
        if (!Multiplies(x, weight, bias)) return null;
        int dims = (int)x.dim();
        long depth = weight.size(inOut ? 0 : 1), width = weight.size(inOut ? 1 : 0);
        if (dims == 0 || x.size(-1) != depth || depth == 0 || width == 0 || depth > int.MaxValue) return null;
        // Sizes one by one: Tensor.shape costs about a microsecond a call, and a decode step makes dozens of products.
        var shape = new long[dims];
        long rows = 1;
        for (int i = 0; i < dims - 1; i++) rows *= shape[i] = x.size(i);
        shape[^1] = width;
        if (rows == 0 || rows > MaxRows || (bias is not null && bias.size(0) != width)) return null;

        // No dispose scope (another microsecond): y lands in the caller's scope, the copies (rare) are disposed here.
        using var inputCopy = x.is_contiguous() ? null : x.contiguous();
        using var biasCopy = bias is null || bias.is_contiguous() ? null : bias.contiguous();
        var input = inputCopy ?? x;
        var biasValues = biasCopy ?? bias;
        var y = empty(shape, ScalarType.Float32);
        var product = new Product((float*)TensorMemory.DataPointer(input), (float*)TensorMemory.DataPointer(weight),
            biasValues is null ? null : (float*)TensorMemory.DataPointer(biasValues), (float*)TensorMemory.DataPointer(y),
            (int)rows, (int)depth, width);
        if (inOut && rows == 1) RowInOut(product);
        else
        {
            // Unpacked strips split in 16-column units: every share is then whole vectors (no strip through scratch)
            // and the two threads get equal columns (512 = 256 + 256, not 240 + 272 in 48-column panels).
            bool direct = inOut && Direct(product);
            long unit = inOut && !direct ? PanelWidth : Lanes;
            long units = (width + unit - 1) / unit;
            // Columns split in whole tiles; the calling thread takes the first share (DecodeThreads runs share 0 on it).
            Run(Threads(rows * depth * width, units), t =>
            {
                long c0 = Math.Min(width, units * t.Index / t.Count * unit), c1 = Math.Min(width, units * (t.Index + 1) / t.Count * unit);
                if (c0 >= c1) return;
                if (inOut) PanelsInOut(product, c0, c1, direct);
                else DotOutIn(product, c0, c1);
            });
        }
        GC.KeepAlive(input);
        GC.KeepAlive(weight);
        GC.KeepAlive(biasValues);
        return y;
    }

    /// <summary>Threads for a product of this many multiply-adds: libtorch's count, one for small ones, at most one per unit of work.</summary>
    private static int Threads(long work, long units) => work < ParallelWork ? 1 : (int)Math.Clamp(get_num_threads(), 1, units);

    private static void Run(int threads, Action<(int Index, int Count)> share)
    {
        if (threads == 1) share((0, 1));
        else DecodeThreads.Shared.Run(threads, t => share((t, threads)));
    }

    /// <summary>Pointers into the operands' memory: x (rows, depth), W, bias (width) or null, y (rows, width).</summary>
    private readonly struct Product(float* x, float* w, float* bias, float* y, int rows, int depth, long width)
    {
        public readonly float* X = x, W = w, Bias = bias, Y = y;
        public readonly int Rows = rows, Depth = depth;
        public readonly long Width = width;
    }

    // ---- (in, out), one row: blocks of whole rows of W, accumulators in L1 ----

    /// <summary>
    /// One row of x: each block of <see cref="BlockDepth"/> rows of W is one contiguous run of memory, the best case for
    /// the prefetcher, so threads split the blocks (not the columns) and each block's partial sums, started from zero,
    /// are added in block order afterwards: the same association the packed tiles use, so one row's result does not
    /// depend on the path or the thread count.
    /// </summary>
    private static void RowInOut(Product p)
    {
        int blocks = (p.Depth + BlockDepth - 1) / BlockDepth;
        long width = p.Width;
        long stride = (width + Lanes - 1) / Lanes * Lanes; // floats per block's partials: whole cache lines
        float[] rented = ArrayPool<float>.Shared.Rent((int)(blocks * stride) + Lanes);
        try
        {
            fixed (float* raw = rented)
            {
                float* partials = (float*)(((nint)raw + 63) & ~(nint)63);
                nint address = (nint)partials;
                Run(Threads(p.Depth * width, blocks), t =>
                {
                    for (int b = blocks * t.Index / t.Count; b < blocks * (t.Index + 1) / t.Count; b++)
                        RowBlock(p, b * BlockDepth, Math.Min(p.Depth, (b + 1) * BlockDepth), (float*)address + b * stride);
                });
                for (long j = 0; j < width; j++)
                {
                    float sum = partials[j];
                    for (int b = 1; b < blocks; b++) sum += partials[b * stride + j];
                    p.Y[j] = p.Bias == null ? sum : sum + p.Bias[j];
                }
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(rented);
        }
    }

    /// <summary>acc[0..width) = x[k0..k1) · W[k0..k1, :], one fused multiply-add chain per column from zero.</summary>
    private static void RowBlock(Product p, int k0, int k1, float* acc)
    {
        if (!Avx512F.IsSupported)
        {
            RowBlock256(p, k0, k1, acc);
            return;
        }
        long width = p.Width, vectors = width / Lanes;
        new Span<float>(acc, (int)width).Clear();
        float* row = p.W + k0 * width;
        for (int k = k0; k < k1; k++, row += width)
        {
            float xk = p.X[k];
            var b = Vector512.Create(xk);
            for (long v = 0; v < vectors; v++)
                Avx512F.Store(acc + v * Lanes, Avx512F.FusedMultiplyAdd(b, Avx512F.LoadVector512(row + v * Lanes), Avx512F.LoadVector512(acc + v * Lanes)));
            for (long j = vectors * Lanes; j < width; j++) acc[j] = MathF.FusedMultiplyAdd(xk, row[j], acc[j]);
        }
    }

    // ---- (in, out), several rows: packed panels in per-thread scratch, 8×48 register tiles ----

    private static void PanelsInOut(Product p, long c0, long c1, bool direct)
    {
        if (direct && Avx512F.IsSupported) DirectInOut(p, c0, c1, null); // every strip read in place: no scratch
        else
        {
            // Rented rather than allocated per call (384 KB would land on the large-object heap each step); aligned by
            // hand to a cache line so a panel's 192-byte rows never straddle one.
            float[] rented = ArrayPool<float>.Shared.Rent(BlockDepth * BlockWidth + Lanes);
            try
            {
                fixed (float* raw = rented)
                {
                    float* scratch = (float*)(((nint)raw + 63) & ~(nint)63);
                    if (direct) DirectInOut(p, c0, c1, scratch);
                    else PackedInOut(p, c0, c1, scratch);
                }
            }
            finally
            {
                ArrayPool<float>.Shared.Return(rented);
            }
        }
        if (p.Bias == null) return;
        for (int m = 0; m < p.Rows; m++) AddBias(p.Y + m * p.Width + c0, p.Bias + c0, c1 - c0);
    }

    /// <summary>y[0..count) += bias[0..count), a vector at a time (one add per element, as the scalar loop).</summary>
    private static void AddBias(float* y, float* bias, long count)
    {
        long j = 0;
        for (; j + Lanes256 <= count; j += Lanes256) Vector256.Store(Vector256.Load(y + j) + Vector256.Load(bias + j), y + j);
        for (; j < count; j++) y[j] += bias[j];
    }

    /// <summary>Whether an (in, out) product of several rows reads W in place (<see cref="DirectInOut"/>) rather than packed.</summary>
    private static bool Direct(Product p) => p.Rows <= (Avx512F.IsSupported ? DirectRows : DirectRows256) && LinesAligned(p);

    /// <summary>
    /// Whether every row of W starts on a cache line, so the unpacked tiles' vector loads never straddle two. A weight
    /// memory-mapped from a safetensors file sits at the file's offset, 4- or 8-byte aligned: read in place, its
    /// 16-row products ran slower than packed ones (served 16 streams at 0.79–0.85× of the packed path), so it is packed
    /// (the serving engine moves such matrices to aligned memory first: <see cref="AlignWeights"/>).
    /// </summary>
    private static bool LinesAligned(Product p) => ((nint)p.W & 63) == 0 && p.Width * sizeof(float) % 64 == 0;

    /// <summary>
    /// Up to <see cref="DirectRows"/> rows: the tiles read W where it lies, one 48-column strip at a time down all of K,
    /// and fetch the strip's next block (or the next strip's first) as they go. Each block of W serves at most four
    /// tiles here, too few to repay copying it: skipping the pack made most 4–32-row products 1.1–1.7× faster (AVX2:
    /// up to 16 rows; 2048→512 at 16 rows and 2 threads was even), docs/benchmarks.md. A share's last strip narrower than
    /// 48 columns is 16 or 32 (shares come in 16-column units and aligned rows are whole cache lines): AVX-512 reads it
    /// in place with a one- or two-vector tile; AVX2 packs it (zero-padded), so no tile reads past the weight.
    /// </summary>
    private static void DirectInOut(Product p, long c0, long c1, float* scratch)
    {
        for (long col = c0; col < c1; col += PanelWidth)
        {
            int columns = (int)Math.Min(PanelWidth, c1 - col);
            for (int kb = 0; kb < p.Depth; kb += BlockDepth)
            {
                int depth = Math.Min(BlockDepth, p.Depth - kb);
                float* panel = p.W + kb * p.Width + col;
                long panelStride = p.Width;
                if (columns < PanelWidth && !Avx512F.IsSupported)
                {
                    Pack(panel, p.Width, depth, columns, scratch);
                    panel = scratch;
                    panelStride = PanelWidth;
                }
                float* following = kb + depth < p.Depth ? p.W + (kb + depth) * p.Width + col
                    : col + PanelWidth < c1 ? p.W + col + PanelWidth : null;
                RunTiles(p, kb, depth, panel, panelStride, col, columns, following, packed: panel == scratch);
            }
        }
    }

    private static void PackedInOut(Product p, long c0, long c1, float* scratch)
    {
        for (long nb = c0; nb < c1; nb += BlockWidth)
        {
            int width = (int)Math.Min(BlockWidth, c1 - nb), panels = (width + PanelWidth - 1) / PanelWidth;
            for (int kb = 0; kb < p.Depth; kb += BlockDepth)
            {
                int depth = Math.Min(BlockDepth, p.Depth - kb);
                Pack(p.W + kb * p.Width + nb, p.Width, depth, width, scratch);
                // The block after this one (next rows, or the next columns' first rows), fetched by the tiles.
                float* following = kb + depth < p.Depth ? p.W + (kb + depth) * p.Width + nb
                    : nb + BlockWidth < c1 ? p.W + nb + BlockWidth : null;
                for (int q = 0; q < panels; q++)
                    RunTiles(p, kb, depth, scratch + q * depth * PanelWidth, PanelWidth, nb + q * PanelWidth,
                        Math.Min(PanelWidth, width - q * PanelWidth), following == null ? null : following + q * PanelWidth, packed: true);
            }
        }
    }

    /// <summary>
    /// All rows of x over one panel of W (rows kb..kb+depth, 48 columns from col, of which columns are real), in tiles of
    /// 8 (AVX-512) or 2 rows; the first tile also fetches the panel that comes next. Unpacked (W in place), a strip of
    /// 16 or 32 columns takes tiles of that width; a packed panel is always 48 wide (zero-padded).
    /// </summary>
    private static void RunTiles(Product p, int kb, int depth, float* panel, long panelStride, long col, int columns, float* following, bool packed)
    {
        int tileRows = Avx512F.IsSupported ? TileRows : TileRows256;
        for (int m0 = 0; m0 < p.Rows; m0 += tileRows)
        {
            var t = new TileArgs(p.X + (long)m0 * p.Depth + kb, p.Depth, depth, panel, p.Y + m0 * p.Width + col, p.Width, columns, kb == 0,
                m0 == 0 ? following : null, p.Width, panelStride);
            if (!Avx512F.IsSupported)
            {
                if (p.Rows - m0 == 1) Tile256<R1>(t);
                else Tile256<R2>(t);
                continue;
            }
            // A strip of 16 or 32 columns read in place: a tile of one or two vectors; otherwise three (a narrow
            // packed panel stays 48 wide, zero-padded).
            switch (packed ? 3 : columns / Lanes)
            {
                case 1: Tiles<V1>(t, p.Rows - m0); break;
                case 2: Tiles<V2>(t, p.Rows - m0); break;
                default: Tiles<V3>(t, p.Rows - m0); break;
            }
        }
    }

    private static void Tiles<V>(TileArgs t, int rows) where V : struct, IRows
    {
        switch (Math.Min(TileRows, rows))
        {
            case 1: Tile<R1, V>(t); break;
            case 2: Tile<R2, V>(t); break;
            case 3: Tile<R3, V>(t); break;
            case 4: Tile<R4, V>(t); break;
            case 5: Tile<R5, V>(t); break;
            case 6: Tile<R6, V>(t); break;
            case 7: Tile<R7, V>(t); break;
            default: Tile<R8, V>(t); break;
        }
    }

    /// <summary>W[0..depth, 0..width) (row stride ld) as panels [width/48][depth][48], the last one padded with zeros.</summary>
    private static void Pack(float* w, long ld, int depth, int width, float* scratch)
    {
        int full = width / PanelWidth, rest = width - full * PanelWidth;
        for (int k = 0; k < depth; k++, w += ld)
        {
            float* dst = scratch + k * PanelWidth;
            for (int q = 0; q < full; q++, dst += depth * PanelWidth)
            {
                new ReadOnlySpan<float>(w + q * PanelWidth, PanelWidth).CopyTo(new Span<float>(dst, PanelWidth));
            }
            if (rest == 0) continue;
            for (int j = 0; j < rest; j++) dst[j] = w[full * PanelWidth + j];
            for (int j = rest; j < PanelWidth; j++) dst[j] = 0;
        }
    }

    private readonly struct TileArgs(float* x, long xStride, int depth, float* panel, float* y, long yStride, int columns, bool first, float* prefetch, long prefetchStride, long panelStride)
    {
        public readonly float* X = x, Panel = panel, Y = y, Prefetch = prefetch;
        public readonly long XStride = xStride, YStride = yStride, PrefetchStride = prefetchStride * sizeof(float), PanelStride = panelStride;
        public readonly int Depth = depth, Columns = columns;
        public readonly bool First = first;
    }

    /// <summary>A tile's row count as a type, so that the JIT compiles one tile per count with the unused rows removed.</summary>
    private interface IRows { static abstract int Count { get; } }
    private struct R1 : IRows { public static int Count => 1; }
    private struct R2 : IRows { public static int Count => 2; }
    private struct R3 : IRows { public static int Count => 3; }
    private struct R4 : IRows { public static int Count => 4; }
    private struct R5 : IRows { public static int Count => 5; }
    private struct R6 : IRows { public static int Count => 6; }
    private struct R7 : IRows { public static int Count => 7; }
    private struct R8 : IRows { public static int Count => 8; }
    private struct V1 : IRows { public static int Count => 1; } // a tile's width in vectors, as a type for the same reason
    private struct V2 : IRows { public static int Count => 2; }
    private struct V3 : IRows { public static int Count => 3; }

    /// <summary>
    /// Up to 8 rows × 48 columns (V vectors of 16) of y over one block of W: accumulators start at zero on the first
    /// block and from y on the next ones (a spill to memory keeps every bit, so the chain over k is one chain).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile<R, V>(TileArgs t) where R : struct, IRows where V : struct, IRows
    {
        int n = R.Count, v = V.Count;
        float* c = stackalloc float[TileRows * PanelWidth];
        bool direct = t.Columns == v * Lanes;
        float* y = direct ? t.Y : c;
        long ly = direct ? t.YStride : PanelWidth;
        if (!direct && !t.First) CopyNarrowIn(t, c, n);
        Vector512<float> a00 = default, a01 = default, a02 = default, a10 = default, a11 = default, a12 = default, a20 = default, a21 = default, a22 = default,
            a30 = default, a31 = default, a32 = default, a40 = default, a41 = default, a42 = default, a50 = default, a51 = default, a52 = default,
            a60 = default, a61 = default, a62 = default, a70 = default, a71 = default, a72 = default;
        Vector512<float> w1 = default, w2 = default;
        byte* next = (byte*)t.Prefetch;
        float* w = t.Panel;
        float* x = t.X;
        long s = t.XStride, ws = t.PanelStride;
        for (int k = 0; k < t.Depth; k++, w += ws, x++)
        {
            if (next != null)
            {
                // The same columns of the next block of W: memory traffic overlaps this block's arithmetic.
                Sse.Prefetch1(next);
                if (v > 1) Sse.Prefetch1(next + 64);
                if (v > 2) Sse.Prefetch1(next + 128);
                next += t.PrefetchStride;
            }
            var w0 = Avx512F.LoadVector512(w);
            if (v > 1) w1 = Avx512F.LoadVector512(w + Lanes);
            if (v > 2) w2 = Avx512F.LoadVector512(w + 2 * Lanes);
            var b = Vector512.Create(x[0]); a00 = Avx512F.FusedMultiplyAdd(b, w0, a00); if (v > 1) a01 = Avx512F.FusedMultiplyAdd(b, w1, a01); if (v > 2) a02 = Avx512F.FusedMultiplyAdd(b, w2, a02);
            if (n > 1) { b = Vector512.Create(x[s]); a10 = Avx512F.FusedMultiplyAdd(b, w0, a10); if (v > 1) a11 = Avx512F.FusedMultiplyAdd(b, w1, a11); if (v > 2) a12 = Avx512F.FusedMultiplyAdd(b, w2, a12); }
            if (n > 2) { b = Vector512.Create(x[2 * s]); a20 = Avx512F.FusedMultiplyAdd(b, w0, a20); if (v > 1) a21 = Avx512F.FusedMultiplyAdd(b, w1, a21); if (v > 2) a22 = Avx512F.FusedMultiplyAdd(b, w2, a22); }
            if (n > 3) { b = Vector512.Create(x[3 * s]); a30 = Avx512F.FusedMultiplyAdd(b, w0, a30); if (v > 1) a31 = Avx512F.FusedMultiplyAdd(b, w1, a31); if (v > 2) a32 = Avx512F.FusedMultiplyAdd(b, w2, a32); }
            if (n > 4) { b = Vector512.Create(x[4 * s]); a40 = Avx512F.FusedMultiplyAdd(b, w0, a40); if (v > 1) a41 = Avx512F.FusedMultiplyAdd(b, w1, a41); if (v > 2) a42 = Avx512F.FusedMultiplyAdd(b, w2, a42); }
            if (n > 5) { b = Vector512.Create(x[5 * s]); a50 = Avx512F.FusedMultiplyAdd(b, w0, a50); if (v > 1) a51 = Avx512F.FusedMultiplyAdd(b, w1, a51); if (v > 2) a52 = Avx512F.FusedMultiplyAdd(b, w2, a52); }
            if (n > 6) { b = Vector512.Create(x[6 * s]); a60 = Avx512F.FusedMultiplyAdd(b, w0, a60); if (v > 1) a61 = Avx512F.FusedMultiplyAdd(b, w1, a61); if (v > 2) a62 = Avx512F.FusedMultiplyAdd(b, w2, a62); }
            if (n > 7) { b = Vector512.Create(x[7 * s]); a70 = Avx512F.FusedMultiplyAdd(b, w0, a70); if (v > 1) a71 = Avx512F.FusedMultiplyAdd(b, w1, a71); if (v > 2) a72 = Avx512F.FusedMultiplyAdd(b, w2, a72); }
        }
        bool add = !t.First;
        Finish<V>(y, add, a00, a01, a02);
        if (n > 1) Finish<V>(y + ly, add, a10, a11, a12);
        if (n > 2) Finish<V>(y + 2 * ly, add, a20, a21, a22);
        if (n > 3) Finish<V>(y + 3 * ly, add, a30, a31, a32);
        if (n > 4) Finish<V>(y + 4 * ly, add, a40, a41, a42);
        if (n > 5) Finish<V>(y + 5 * ly, add, a50, a51, a52);
        if (n > 6) Finish<V>(y + 6 * ly, add, a60, a61, a62);
        if (n > 7) Finish<V>(y + 7 * ly, add, a70, a71, a72);
        if (!direct) CopyNarrowOut(t, c, n);
    }

    /// <summary>
    /// A tile narrower than a panel (the last strip of W) accumulates in 48-column scratch rows, so its full-width
    /// vector stores never write past y's columns: the sums so far come in before a block and go back after it.
    /// </summary>
    private static void CopyNarrowIn(TileArgs t, float* c, int n)
    {
        for (int m = 0; m < n; m++)
            for (int j = 0; j < t.Columns; j++) c[m * PanelWidth + j] = t.Y[m * t.YStride + j];
    }

    private static void CopyNarrowOut(TileArgs t, float* c, int n)
    {
        for (int m = 0; m < n; m++)
            for (int j = 0; j < t.Columns; j++) t.Y[m * t.YStride + j] = c[m * PanelWidth + j];
    }

    /// <summary>Stores a block's sums, added to those of the blocks before it (previous + this block, in block order).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Finish<V>(float* y, bool add, Vector512<float> a0, Vector512<float> a1, Vector512<float> a2) where V : struct, IRows
    {
        if (add)
        {
            a0 = Avx512F.Add(Avx512F.LoadVector512(y), a0);
            if (V.Count > 1) a1 = Avx512F.Add(Avx512F.LoadVector512(y + Lanes), a1);
            if (V.Count > 2) a2 = Avx512F.Add(Avx512F.LoadVector512(y + 2 * Lanes), a2);
        }
        Avx512F.Store(y, a0);
        if (V.Count > 1) Avx512F.Store(y + Lanes, a1);
        if (V.Count > 2) Avx512F.Store(y + 2 * Lanes, a2);
    }

    // ---- (out, in): dot products along K, 4 rows of x × 4 rows of W ----

    private static void DotOutIn(Product p, long c0, long c1)
    {
        int dotRows = Avx512F.IsSupported ? DotRows : DotRows256, tiles = (p.Rows + dotRows - 1) / dotRows;
        // W in chunks of 256 KB (128 rows at K = 512) that stay in L2 while every block of 8 rows of x (16 KB at K = 512,
        // kept in L1) passes over them, group by group. Two groups per pass over all the tiles of x (the previous order)
        // streamed x from L2 at 16 rows (x alone is then 32 KB, all of L1); this order took 18–33 % off 8- and 16-row
        // head products, 11–15 % off 32-row and 7–9 % off 1-row ones (docs/benchmarks.md, "The head in chunks").
        long chunk = Math.Max(DotWidth, DotChunkBytes / sizeof(float) / p.Depth / DotWidth * DotWidth);
        for (long c = c0; c < c1; c += chunk)
            for (int mb = 0; mb < p.Rows; mb += DotBlockRows)
                for (long n0 = c; n0 < Math.Min(c1, c + chunk); n0 += DotWidth)
                    for (int m0 = mb; m0 < Math.Min(p.Rows, mb + DotBlockRows); m0 += dotRows)
                        DotTile(p, c1, m0, n0, chunk, m0 / dotRows, tiles);
    }

    /// <summary>
    /// The tile of rows m0.. of x and the group of 4 rows of W from n0; it also fetches into L2 its share of the same
    /// group one chunk on (<paramref name="ahead"/> rows of W), so that the next chunk arrives while this one is
    /// computed: tile i of a group's <paramref name="tiles"/> fetches its own rows of that group (with more than 4
    /// tiles, one row for every (tiles / 4)-th tile), which spreads the memory traffic over all the passes of x
    /// instead of the first tile's.
    /// </summary>
    private static void DotTile(Product p, long c1, int m0, long n0, long ahead, int tile, int tiles)
    {
        int columns = (int)Math.Min(DotWidth, c1 - n0);
        // A last group of fewer than 4 rows of W repeats its last row (computed, not stored): one tile shape for all.
        var w = new WeightRows(p.W + n0 * p.Depth, p.W + Math.Min(n0 + 1, c1 - 1) * p.Depth,
            p.W + Math.Min(n0 + 2, c1 - 1) * p.Depth, p.W + Math.Min(n0 + 3, c1 - 1) * p.Depth);
        int first = 0, count = 0;
        if (n0 + ahead < c1)
        {
            if (tiles <= DotWidth) (first, count) = (DotWidth * tile / tiles, DotWidth * (tile + 1) / tiles - DotWidth * tile / tiles);
            else if (tile % (tiles / DotWidth) == 0 && tile / (tiles / DotWidth) < DotWidth) (first, count) = (tile / (tiles / DotWidth), 1);
        }
        var t = new DotArgs(p.X + (long)m0 * p.Depth, p.Depth, w, p.Y + m0 * p.Width + n0, p.Width, columns, p.Bias == null ? null : p.Bias + n0,
            count == 0 ? null : p.W + (n0 + ahead + first) * p.Depth, count);
        switch (Avx512F.IsSupported ? Math.Min(DotRows, p.Rows - m0) : -Math.Min(DotRows256, p.Rows - m0))
        {
            case -1: Dot256<R1>(t); break;
            case -2: Dot256<R2>(t); break;
            case 1: Dot<R1>(t); break;
            case 2: Dot<R2>(t); break;
            case 3: Dot<R3>(t); break;
            default: Dot<R4>(t); break;
        }
    }

    private readonly struct WeightRows(float* w0, float* w1, float* w2, float* w3)
    {
        public readonly float* W0 = w0, W1 = w1, W2 = w2, W3 = w3;
    }

    private readonly struct DotArgs(float* x, int depth, WeightRows w, float* y, long yStride, int columns, float* bias, float* ahead, int aheadRows)
    {
        public readonly float* X = x, Y = y, Bias = bias, Ahead = ahead;
        public readonly int AheadRows = aheadRows;
        public readonly WeightRows W = w;
        public readonly long YStride = yStride;
        public readonly int Depth = depth, Columns = columns;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot<R>(DotArgs t) where R : struct, IRows
    {
        int n = R.Count, depth = t.Depth, whole = depth / Lanes * Lanes;
        float* w0 = t.W.W0, w1 = t.W.W1, w2 = t.W.W2, w3 = t.W.W3;
        float* x0 = t.X, x1 = t.X + depth, x2 = t.X + 2 * depth, x3 = t.X + 3 * depth;
        Vector512<float> c00 = default, c01 = default, c02 = default, c03 = default, c10 = default, c11 = default, c12 = default, c13 = default,
            c20 = default, c21 = default, c22 = default, c23 = default, c30 = default, c31 = default, c32 = default, c33 = default;
        // The tile's share of the group one chunk on (DotTile), the same 16 floats of each row, into L2 as it goes.
        float* ahead = t.Ahead;
        int aheadRows = t.AheadRows;
        for (int k = 0; k < whole; k += Lanes)
        {
            if (aheadRows != 0)
            {
                Sse.Prefetch1(ahead + k);
                if (aheadRows > 1) Sse.Prefetch1(ahead + depth + k);
                if (aheadRows > 2) Sse.Prefetch1(ahead + 2 * depth + k);
                if (aheadRows > 3) Sse.Prefetch1(ahead + 3 * depth + k);
            }
            var v0 = Avx512F.LoadVector512(w0 + k);
            var v1 = Avx512F.LoadVector512(w1 + k);
            var v2 = Avx512F.LoadVector512(w2 + k);
            var v3 = Avx512F.LoadVector512(w3 + k);
            var a = Avx512F.LoadVector512(x0 + k);
            c00 = Avx512F.FusedMultiplyAdd(a, v0, c00); c01 = Avx512F.FusedMultiplyAdd(a, v1, c01); c02 = Avx512F.FusedMultiplyAdd(a, v2, c02); c03 = Avx512F.FusedMultiplyAdd(a, v3, c03);
            if (n > 1) { a = Avx512F.LoadVector512(x1 + k); c10 = Avx512F.FusedMultiplyAdd(a, v0, c10); c11 = Avx512F.FusedMultiplyAdd(a, v1, c11); c12 = Avx512F.FusedMultiplyAdd(a, v2, c12); c13 = Avx512F.FusedMultiplyAdd(a, v3, c13); }
            if (n > 2) { a = Avx512F.LoadVector512(x2 + k); c20 = Avx512F.FusedMultiplyAdd(a, v0, c20); c21 = Avx512F.FusedMultiplyAdd(a, v1, c21); c22 = Avx512F.FusedMultiplyAdd(a, v2, c22); c23 = Avx512F.FusedMultiplyAdd(a, v3, c23); }
            if (n > 3) { a = Avx512F.LoadVector512(x3 + k); c30 = Avx512F.FusedMultiplyAdd(a, v0, c30); c31 = Avx512F.FusedMultiplyAdd(a, v1, c31); c32 = Avx512F.FusedMultiplyAdd(a, v2, c32); c33 = Avx512F.FusedMultiplyAdd(a, v3, c33); }
        }
        if (whole < depth)
        {
            // The last depth mod 16 elements, zero-padded to a vector: the same lanes continue their chains.
            int rest = depth - whole;
            float* tail = stackalloc float[8 * Lanes];
            new Span<float>(tail, 8 * Lanes).Clear();
            for (int j = 0; j < rest; j++)
            {
                tail[j] = w0[whole + j]; tail[Lanes + j] = w1[whole + j]; tail[2 * Lanes + j] = w2[whole + j]; tail[3 * Lanes + j] = w3[whole + j];
                tail[4 * Lanes + j] = x0[whole + j];
                if (n > 1) tail[5 * Lanes + j] = x1[whole + j];
                if (n > 2) tail[6 * Lanes + j] = x2[whole + j];
                if (n > 3) tail[7 * Lanes + j] = x3[whole + j];
            }
            var v0 = Avx512F.LoadVector512(tail);
            var v1 = Avx512F.LoadVector512(tail + Lanes);
            var v2 = Avx512F.LoadVector512(tail + 2 * Lanes);
            var v3 = Avx512F.LoadVector512(tail + 3 * Lanes);
            var a = Avx512F.LoadVector512(tail + 4 * Lanes);
            c00 = Avx512F.FusedMultiplyAdd(a, v0, c00); c01 = Avx512F.FusedMultiplyAdd(a, v1, c01); c02 = Avx512F.FusedMultiplyAdd(a, v2, c02); c03 = Avx512F.FusedMultiplyAdd(a, v3, c03);
            if (n > 1) { a = Avx512F.LoadVector512(tail + 5 * Lanes); c10 = Avx512F.FusedMultiplyAdd(a, v0, c10); c11 = Avx512F.FusedMultiplyAdd(a, v1, c11); c12 = Avx512F.FusedMultiplyAdd(a, v2, c12); c13 = Avx512F.FusedMultiplyAdd(a, v3, c13); }
            if (n > 2) { a = Avx512F.LoadVector512(tail + 6 * Lanes); c20 = Avx512F.FusedMultiplyAdd(a, v0, c20); c21 = Avx512F.FusedMultiplyAdd(a, v1, c21); c22 = Avx512F.FusedMultiplyAdd(a, v2, c22); c23 = Avx512F.FusedMultiplyAdd(a, v3, c23); }
            if (n > 3) { a = Avx512F.LoadVector512(tail + 7 * Lanes); c30 = Avx512F.FusedMultiplyAdd(a, v0, c30); c31 = Avx512F.FusedMultiplyAdd(a, v1, c31); c32 = Avx512F.FusedMultiplyAdd(a, v2, c32); c33 = Avx512F.FusedMultiplyAdd(a, v3, c33); }
        }
        // The sixteen horizontal sums of the tile at once, in the order of Vector512.Sum (adjacent lanes pairwise:
        // ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)), and so on up the tree), so the bits are the same as summing
        // each vector alone; lane 4r + c of the result is row r, column c. Written here rather than called: the JIT did
        // not inline a method of 16 vector arguments, and passed them through the stack.
        // Rows the tile does not have are not reduced (one row costs a third of four separate sums): their lanes
        // repeat row 0's or hold zeros, and are not stored.
        int columns = t.Columns;
        var r0 = Quads(Pairs(c00, c01), Pairs(c02, c03));
        var r1 = n > 1 ? Quads(Pairs(c10, c11), Pairs(c12, c13)) : r0;
        var r2 = n > 2 ? Quads(Pairs(c20, c21), Pairs(c22, c23)) : default;
        var r3 = n > 3 ? Quads(Pairs(c30, c31), Pairs(c32, c33)) : default;
        var h01 = Avx512F.Add(Avx512F.Shuffle4x128(r0, r1, 0x88), Avx512F.Shuffle4x128(r0, r1, 0xDD));
        var h23 = n > 2 ? Avx512F.Add(Avx512F.Shuffle4x128(r2, r3, 0x88), Avx512F.Shuffle4x128(r2, r3, 0xDD)) : h01;
        var sums = Avx512F.Add(Avx512F.Shuffle4x128(h01, h23, 0x88), Avx512F.Shuffle4x128(h01, h23, 0xDD));
        float* b = t.Bias;
        if (columns == DotWidth)
        {
            if (b != null)
            {
                var bias = Vector256.Create(Sse.LoadVector128(b), Sse.LoadVector128(b));
                sums = Avx512F.Add(sums, Vector512.Create(bias, bias));
            }
            float* y = t.Y;
            Sse.Store(y, sums.GetLower().GetLower());
            if (n > 1) Sse.Store(y + t.YStride, sums.GetLower().GetUpper());
            if (n > 2) Sse.Store(y + 2 * t.YStride, sums.GetUpper().GetLower());
            if (n > 3) Sse.Store(y + 3 * t.YStride, sums.GetUpper().GetUpper());
            return;
        }
        float* all = stackalloc float[Lanes];
        Avx512F.Store(all, sums);
        for (int r = 0; r < n; r++)
            for (int c = 0; c < columns; c++)
                t.Y[r * t.YStride + c] = b == null ? all[r * DotWidth + c] : all[r * DotWidth + c] + b[c];
    }

    /// <summary>Adjacent lanes of a and b added in pairs: per 128-bit lane (a0 + a1, a2 + a3, b0 + b1, b2 + b3).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> Pairs(Vector512<float> a, Vector512<float> b) =>
        Avx512F.Add(Avx512F.Shuffle(a, b, 0x88), Avx512F.Shuffle(a, b, 0xDD));

    /// <summary>Two results of <see cref="Pairs"/> added in pairs again: per 128-bit lane the four vectors' quarter sums.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> Quads(Vector512<float> p, Vector512<float> q) =>
        Avx512F.Add(Avx512F.Shuffle(p, q, 0x88), Avx512F.Shuffle(p, q, 0xDD));
}
