namespace TianGong.Models.Layers;

/// <summary>
/// Keys and values of every layer for incremental decoding, preallocated to the maximum length
/// so that a decode step writes one slot instead of concatenating (which would copy the whole cache each token).
/// </summary>
/// <remarks>
/// Two ways to use it. Shared length (the default): every row of the batch holds the same number of positions,
/// as in <c>TextGenerator</c>. Per row (<see cref="UsePerRowLengths"/>): each row is a slot of a serving engine with
/// its own length; a forward call covers a contiguous range of rows (<see cref="SelectRows"/>), and the model's
/// attention context gets per-row slots from <see cref="NextSlots"/>, so that sequences of different lengths decode in one pass.
/// </remarks>
public sealed class KvCache : IDisposable
{
    private readonly Tensor[] keys;   // per layer (B, kvHeads, maxLen, headDim)
    private readonly Tensor[] values;
    private int[]? rowLengths;        // per row; null while all rows share Length
    private int rowStart, rowCount;
    private Tensor? writeIndex;       // (rows, 1, T, 1) slots the selected rows write this step
    private Tensor? slots;            // what NextSlots handed out last
    private int[]? realTokens;        // per selected row, tokens of the next call before its right padding; null: all T
    private Tensor[]? prefixKeys;     // per layer (1 or B, kvHeads, P, headDim) as Prefill got them, autograd graph and all
    private Tensor[]? prefixValues;
    private int prefixLength;

    public KvCache(int layers, long batch, int kvHeads, int maxLength, int headDim, ScalarType dtype, Device device)
    {
        keys = new Tensor[layers];
        values = new Tensor[layers];
        for (int i = 0; i < layers; i++)
        {
            keys[i] = zeros([batch, kvHeads, maxLength, headDim], dtype, device);
            values[i] = zeros([batch, kvHeads, maxLength, headDim], dtype, device);
        }
        MaxLength = maxLength;
        Batch = (int)batch;
        rowCount = Batch;
    }

    /// <summary>
    /// Number of positions already stored (the same for every layer between forward calls). With per-row
    /// lengths: the longest of the selected rows, which is what a context-length check needs.
    /// </summary>
    public int Length
    {
        get => rowLengths is null ? sharedLength : rowLengths.Skip(rowStart).Take(rowCount).DefaultIfEmpty(0).Max();
    }

    private int sharedLength;

    public int MaxLength { get; }

    public int Batch { get; }

    public int Layers => keys.Length;

    public long KeyValueHeads => keys[0].shape[1];

    public long HeadDim => keys[0].shape[3];

    /// <summary>Whether each row keeps its own length (<see cref="UsePerRowLengths"/>: a serving engine's slots).</summary>
    public bool HasPerRowLengths => rowLengths is not null;

    /// <summary>
    /// Fills the first P positions of an empty shared-length cache with given keys and values, one (1 or B, kvHeads, P,
    /// headDim) pair per layer (prefix tuning's virtual tokens, which transformers passes as past_key_values). They are
    /// stored like any positions; while they require grad they are also kept as given, and <see cref="Append"/> under
    /// autograd returns them, not their detached stored copy, so that the loss reaches the parameters they came from.
    /// </summary>
    public void Prefill(IReadOnlyList<Tensor> prefixKeys, IReadOnlyList<Tensor> prefixValues)
    {
        if (rowLengths is not null) throw new InvalidOperationException("Prefill needs a cache whose rows share one length");
        if (sharedLength != 0) throw new InvalidOperationException("Prefill needs an empty cache");
        if (prefixKeys.Count != keys.Length || prefixValues.Count != keys.Length)
            throw new ArgumentException($"{prefixKeys.Count} key and {prefixValues.Count} value tensors for {keys.Length} layers");
        int p = (int)prefixKeys[0].shape[2];
        if (p > MaxLength) throw new TianGongException($"KV cache is full: a prefix of {p} positions exceeds its capacity of {MaxLength}");
        using (no_grad())
            for (int layer = 0; layer < keys.Length; layer++)
            {
                keys[layer].narrow(2, 0, p).copy_(prefixKeys[layer]);
                values[layer].narrow(2, 0, p).copy_(prefixValues[layer]);
            }
        sharedLength = p;
        if (is_grad_enabled() && prefixKeys.Concat(prefixValues).Any(t => t.requires_grad))
        {
            this.prefixKeys = prefixKeys.Select(t => t.alias().DetachFromDisposeScope()).ToArray();
            this.prefixValues = prefixValues.Select(t => t.alias().DetachFromDisposeScope()).ToArray();
            prefixLength = p;
        }
    }

    /// <summary>Switches to per-row lengths (all rows empty); from then on forward calls cover <see cref="SelectRows"/>.</summary>
    public void UsePerRowLengths()
    {
        rowLengths = new int[Batch];
        sharedLength = 0;
    }

    /// <summary>The next forward call reads and writes rows start..start+count-1 (its input has count rows).</summary>
    public void SelectRows(int start, int count)
    {
        if (rowLengths is null) throw new InvalidOperationException("SelectRows needs UsePerRowLengths first");
        if (start < 0 || count < 1 || start + count > Batch) throw new ArgumentOutOfRangeException(nameof(count));
        (rowStart, rowCount) = (start, count);
        realTokens = null; // counts set for a call that failed do not leak into this one
    }

    /// <summary>
    /// The next forward call is right-padded: selected row i holds <paramref name="tokens"/>[i] real tokens, then padding
    /// up to the call's T. <see cref="Advance"/> counts only the real ones, so a row's padding slots lie past its length:
    /// its real tokens never attend them (they come after them, and attention is causal over slots), later tokens of
    /// the row do not either (they are masked beyond each row's own slot) and overwrite them.
    /// </summary>
    public void SetRealTokens(int[] tokens)
    {
        if (rowLengths is null) throw new InvalidOperationException("SetRealTokens needs UsePerRowLengths first");
        if (tokens.Length != rowCount) throw new ArgumentException($"{tokens.Length} counts for {rowCount} selected rows", nameof(tokens));
        realTokens = tokens;
    }

    public int RowLength(int row) => rowLengths?[row] ?? sharedLength;

    /// <summary>Empties one row (its slot is free for the next sequence).</summary>
    public void ClearRow(int row) => PerRow()[row] = 0;

    /// <summary>Copies row <paramref name="from"/> over row <paramref name="to"/>, so a serving engine keeps its live rows contiguous.</summary>
    public void MoveRow(int from, int to)
    {
        var lengths = PerRow();
        using var scope = NewDisposeScope();
        using (no_grad())
            for (int layer = 0; layer < keys.Length; layer++)
            {
                keys[layer][to].copy_(keys[layer][from]);
                values[layer][to].copy_(values[layer][from]);
            }
        lengths[to] = lengths[from];
        lengths[from] = 0;
    }

    /// <summary>
    /// The cache slots the next T tokens will occupy, (B, T) per row or (1, T) when rows share their length; the model's
    /// attention context derives positions and masks from them. Called once per forward, before any layer appends.
    /// The cache owns the returned tensor until the next call.
    /// </summary>
    public Tensor NextSlots(long t, Device device)
    {
        writeIndex?.Dispose();
        slots?.Dispose();
        writeIndex = null;
        if (rowLengths is null)
            return slots = arange(sharedLength, sharedLength + t, dtype: ScalarType.Int64, device: device).unsqueeze(0).DetachFromDisposeScope();
        using var scope = NewDisposeScope();
        var starts = tensor(rowLengths.Skip(rowStart).Take(rowCount).Select(l => (long)l).ToArray(), device: device); // (B)
        var rowSlots = starts.unsqueeze(1) + arange(t, dtype: ScalarType.Int64, device: device).unsqueeze(0);         // (B, T)
        writeIndex = rowSlots.view(rowCount, 1, t, 1).DetachFromDisposeScope();
        return slots = rowSlots.DetachFromDisposeScope();
    }

    /// <summary>Stores k, v (B, kvHeads, T, headDim) at the next positions of one layer and returns views of everything stored so far.</summary>
    public (Tensor Keys, Tensor Values) Append(int layer, Tensor k, Tensor v)
    {
        long t = k.shape[2];
        int length = Length;
        if (length + t > MaxLength)
            throw new TianGongException($"KV cache is full: {length} + {t} positions exceed its capacity of {MaxLength}");
        if (rowLengths is null)
        {
            using (no_grad())
            {
                keys[layer].narrow(2, length, t).copy_(k);
                values[layer].narrow(2, length, t).copy_(v);
            }
            if (prefixKeys is not null && is_grad_enabled())
            {
                // The stored copies are detached: the prefix and the new positions go in as they came, with their graphs.
                var b = k.shape[0];
                return (cat([prefixKeys[layer].expand(b, -1, -1, -1), keys[layer].narrow(2, prefixLength, length - prefixLength), k], 2),
                        cat([prefixValues[layer].expand(b, -1, -1, -1), values[layer].narrow(2, prefixLength, length - prefixLength), v], 2));
            }
            return (keys[layer].narrow(2, 0, length + t), values[layer].narrow(2, 0, length + t));
        }
        if (writeIndex is null) throw new InvalidOperationException("per-row cache: call NextSlots before Append");
        var rowKeys = keys[layer].narrow(0, rowStart, rowCount);                            // (B, Hkv, maxLen, D), a view
        var rowValues = values[layer].narrow(0, rowStart, rowCount);
        using (no_grad())
        {
            using var index = writeIndex.expand(rowCount, k.shape[1], t, k.shape[3]);     // (B, Hkv, T, D)
            rowKeys.scatter_(2, index, k);
            rowValues.scatter_(2, index, v);
        }
        return (rowKeys.narrow(2, 0, length + t), rowValues.narrow(2, 0, length + t));
    }

    /// <summary>
    /// A decode step's attention through <see cref="DecodeAttention"/>: stores k, v (B, kvHeads, 1, headDim) at each
    /// selected row's next slot, as <see cref="Append"/> does, and returns the attention of q (B, kvHeads × groups, 1,
    /// headDim) over each row's own positions (within <paramref name="window"/> of its slot); null, with nothing
    /// stored, when the kernel does not apply (not one fp32 CPU token per row, gradients wanted, prefix-tuning's graph,
    /// a full cache, a CPU without AVX2 + FMA): then the caller takes libtorch's path.
    /// </summary>
    public Tensor? TryAttendOne(int layer, Tensor q, Tensor k, Tensor v, int groups, int? window)
    {
        var cached = keys[layer];
        if (!DecodeAttention.Supported || q.dim() != 4 || k.dim() != 4 || v.dim() != 4 || q.size(2) != 1 || k.size(2) != 1 || v.size(2) != 1
            || q.device_type != DeviceType.CPU || k.device_type != DeviceType.CPU || v.device_type != DeviceType.CPU || cached.device_type != DeviceType.CPU
            || q.dtype != ScalarType.Float32 || k.dtype != ScalarType.Float32 || v.dtype != ScalarType.Float32 || cached.dtype != ScalarType.Float32)
            return null;
        if (is_grad_enabled() && (q.requires_grad || k.requires_grad || v.requires_grad || prefixKeys is not null)) return null;
        long rows = rowLengths is null ? Batch : rowCount, dim = cached.size(3), kvHeads = cached.size(1);
        if (groups < 1 || window < 1 || q.size(0) != rows || k.size(0) != rows || v.size(0) != rows || k.size(1) != kvHeads || v.size(1) != kvHeads
            || q.size(1) != kvHeads * groups || q.size(3) != dim || k.size(3) != dim || v.size(3) != dim
            || q.stride(3) != 1 || k.stride(3) != 1 || v.stride(3) != 1)
            return null;
        if (rowLengths is not null && writeIndex is null) throw new InvalidOperationException("per-row cache: call NextSlots before Append");
        var slots = new int[rows];
        for (int b = 0; b < rows; b++)
        {
            slots[b] = rowLengths?[rowStart + b] ?? sharedLength;
            if (slots[b] + 1 > MaxLength) return null; // Append says the cache is full
        }
        return DecodeAttention.Attend(q, k, v, cached, values[layer], rowLengths is null ? 0 : rowStart, slots, groups, window);
    }

    /// <summary>Called by the model once every layer has appended the same T positions.</summary>
    public void Advance(int positions)
    {
        if (rowLengths is null) { sharedLength += positions; return; }
        for (int r = rowStart; r < rowStart + rowCount; r++)
        {
            int real = realTokens?[r - rowStart] ?? positions;
            if (real < 1 || real > positions) throw new InvalidOperationException($"row {r}: {real} real tokens in a call of {positions}");
            rowLengths[r] += real;
        }
        realTokens = null;
    }

    /// <summary>Forgets everything stored, keeping the memory for the next sequence.</summary>
    public void Reset()
    {
        sharedLength = 0;
        DropPrefix();
        realTokens = null;
        if (rowLengths is not null) Array.Clear(rowLengths);
    }

    private void DropPrefix()
    {
        foreach (var t in (prefixKeys ?? []).Concat(prefixValues ?? [])) t.Dispose();
        (prefixKeys, prefixValues, prefixLength) = (null, null, 0);
    }

    private int[] PerRow() => rowLengths ?? throw new InvalidOperationException("this cache shares one length across rows");

    public void Dispose()
    {
        foreach (var t in keys) t.Dispose();
        foreach (var t in values) t.Dispose();
        writeIndex?.Dispose();
        slots?.Dispose();
        DropPrefix();
    }
}
