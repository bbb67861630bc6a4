namespace TianGong.Models.Layers;

/// <summary>
/// Where the T new tokens of one decoder forward call sit and what each of them may attend to. The trunk builds it once
/// per call from the call's inputs (attention mask, position ids) and the cache; every layer reads it. Attention itself
/// never asks the cache about rows or lengths.
/// </summary>
/// <remarks>
/// Slots are cache indices: query i of row b is stored at slot s(b, i), and it may see key slot j when j ≤ s(b, i),
/// j is not padding (attention mask), and, in a sliding-window layer, s(b, i) − j &lt; window. Positions (for rotary or
/// learned position embeddings) equal the slots unless the caller passes position ids (generation with left padding
/// passes them, as transformers' generate() does).
/// </remarks>
public sealed class AttentionContext : IDisposable
{
    private readonly Tensor slots;        // (B or 1, T)
    private Tensor? mask;                 // (B or 1, 1, T, S) bool, null: plain causal attention is exact
    private bool rowMaskPending;          // per-row slots without padding: the mask is built on first use (a decode kernel step needs none)
    private readonly bool padded;         // the caller passed an attention mask
    private readonly Dictionary<int, Tensor?> windowMasks = [];
    private readonly bool ownsSlots;      // false when the cache handed them out (it keeps them for its writes)
    private readonly KvCache? cache;

    private AttentionContext(KvCache? cache, Tensor slots, bool ownsSlots, Tensor? mask, bool rowMaskPending, bool padded, Tensor positions, int? start, long keyLength)
    {
        this.cache = cache;
        this.slots = slots;
        this.ownsSlots = ownsSlots;
        this.mask = mask;
        this.rowMaskPending = rowMaskPending;
        this.padded = padded;
        Positions = positions;
        Start = start;
        KeyLength = keyLength;
    }

    /// <summary>Positions of the new tokens, (B or 1, T).</summary>
    public Tensor Positions { get; }

    /// <summary>The first position when every row's positions are start..start+T−1 (the fast rotary path), else null.</summary>
    public int? Start { get; }

    /// <summary>Keys each query can reach: positions already cached plus T.</summary>
    public long KeyLength { get; }

    /// <summary>Recompute the attention core in backward instead of keeping its activations (recompute=selective); set by pipeline stages when training.</summary>
    public bool RecomputeCore { get; private init; }

    /// <param name="attentionMask">(B, S) 1 for tokens, 0 for padding, over every key slot (cached ones and the T new ones).</param>
    /// <param name="positionIds">(B, T) explicit positions, or null for the slots.</param>
    public static AttentionContext Create(long batch, long t, Device device, Tensor? attentionMask, Tensor? positionIds, KvCache? cache, bool recomputeCore = false)
    {
        using var scope = NewDisposeScope();
        int past = cache?.Length ?? 0;
        long s = past + t;
        // The cache owns the slots it hands out; without one the new tokens are the whole sequence.
        var slots = cache?.NextSlots(t, device) ?? arange(t, dtype: ScalarType.Int64, device: device).unsqueeze(0);
        bool perRow = slots.shape[0] > 1;
        Tensor? mask = null;
        if (attentionMask is not null)
        {
            if (attentionMask.dim() != 2 || attentionMask.shape[0] != batch || attentionMask.shape[1] != s)
                throw new TianGongException($"attention_mask: expected shape [{batch}, {s}] (cached + new positions), got [{string.Join(", ", attentionMask.shape)}]");
            var keys = arange(s, dtype: ScalarType.Int64, device: device).view(1, 1, 1, s);
            var query = slots.view(slots.shape[0], 1, t, 1);
            // A padding query sees nothing else; letting it see itself keeps its (ignored) output finite.
            mask = (keys <= query).logical_and(attentionMask.to(ScalarType.Bool, device).view(batch, 1, 1, s)).logical_or(keys == query);
        }
        if (positionIds is not null && (positionIds.dim() != 2 || positionIds.shape[1] != t))
            throw new TianGongException($"position_ids: expected shape [{batch}, {t}], got [{string.Join(", ", positionIds.shape)}]");
        var positions = positionIds?.to(ScalarType.Int64, device) ?? slots;
        int? start = positionIds is null && !perRow ? past : null;
        return new AttentionContext(cache,
            slots.DetachFromDisposeScope(), ownsSlots: cache is null, mask?.DetachFromDisposeScope(),
            rowMaskPending: perRow && attentionMask is null, padded: attentionMask is not null,
            positionIds is null ? slots : positions.DetachFromDisposeScope(), start, s) { RecomputeCore = recomputeCore };
    }

    /// <summary>
    /// Keys and values (B, kvHeads, S, D) a layer attends to: its new ones appended to the cache, when there is one,
    /// and everything stored so far; without a cache, the new ones alone.
    /// </summary>
    public (Tensor Keys, Tensor Values) KeysAndValues(int layer, Tensor k, Tensor v) => cache is null ? (k, v) : cache.Append(layer, k, v);

    /// <summary>
    /// A decoder layer's attention, (B, heads, T, D): its new keys and values k, v (B, kvHeads, T, D) stored in the cache
    /// (when there is one), each of the kvHeads shared by <paramref name="groups"/> query heads of q (B, heads, T, D),
    /// under this call's mask and the layer's sliding <paramref name="window"/> (Mistral's and Qwen2's sliding_window;
    /// null: full attention). A decode step that <see cref="DecodeAttention"/> computes exactly (one token per row, no
    /// padding mask, inference, fp32 on a CPU with AVX2 + FMA) goes there; everything else appends, repeats the key/value
    /// heads and runs libtorch's scaled_dot_product_attention (<see cref="Attention.Decoder"/>).
    /// </summary>
    public Tensor Attend(int layer, Tensor q, Tensor k, Tensor v, int groups, int? window, double dropout)
    {
        if (cache is not null && !padded && !RecomputeCore && dropout == 0 && cache.TryAttendOne(layer, q, k, v, groups, window) is { } y)
            return y;
        (k, v) = KeysAndValues(layer, k, v);
        if (groups > 1)
        {
            k = Attention.RepeatKv(k, groups);
            v = Attention.RepeatKv(v, groups);
        }
        return Attention.Decoder(q, k, v, this, window, dropout);
    }

    /// <summary>Called by the trunk once every layer has run: the cache now holds the T new positions.</summary>
    public void Commit() => cache?.Advance((int)Positions.shape[1]);

    /// <summary>
    /// The mask for one layer, or null when libtorch's causal attention is exact (see <see cref="Attention.Causal"/>).
    /// <paramref name="window"/>: Mistral's and Qwen2's sliding_window for this layer (null: full attention).
    /// </summary>
    public Tensor? MaskFor(int? window)
    {
        if (rowMaskPending)
        {
            // Each row's queries see the keys up to their own slot: (B, 1, T, S).
            using var rowScope = NewDisposeScope();
            var keys = arange(KeyLength, dtype: ScalarType.Int64, device: slots.device).view(1, 1, 1, KeyLength);
            mask = (keys <= slots.view(slots.shape[0], 1, slots.shape[1], 1)).DetachFromDisposeScope();
            rowMaskPending = false;
        }
        if (window is not { } w || w >= KeyLength) return mask;
        if (windowMasks.TryGetValue(w, out var cached)) return cached;
        using var scope = NewDisposeScope();
        var distance = slots.unsqueeze(-1) - arange(KeyLength, dtype: ScalarType.Int64, device: slots.device); // (B or 1, T, S)
        var inWindow = (distance < w).unsqueeze(1);                                                          // (B or 1, 1, T, S)
        var combined = mask is null ? (distance >= 0).unsqueeze(1).logical_and(inWindow) : mask.logical_and(inWindow);
        return windowMasks[w] = combined.DetachFromDisposeScope();
    }

    /// <summary>
    /// Positions of the last T of S tokens under an attention mask (B, S), as transformers' generate() derives them for
    /// left-padded prompts: each token's index among its row's real tokens (padding gets 1, it is never attended).
    /// </summary>
    public static Tensor PositionsFromMask(Tensor attentionMask, long t)
    {
        using var scope = NewDisposeScope();
        var m = attentionMask.to(ScalarType.Int64);
        var positions = m.cumsum(-1) - 1;
        positions = positions.masked_fill(m.eq(0), 1);
        return positions.narrow(1, positions.shape[1] - t, t).MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        if (ownsSlots) slots.Dispose();
        mask?.Dispose();
        if (!ReferenceEquals(Positions, slots)) Positions.Dispose();
        foreach (var m in windowMasks.Values) m?.Dispose();
    }
}
