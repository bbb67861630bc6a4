namespace TianGong.Checkpoints;

/// <summary>
/// Raw-byte access to a contiguous CPU tensor of any size. <c>Tensor.bytes</c> is a Span and so stops at 2 GB;
/// narrowing a flat view keeps each piece under that while still pointing into the tensor's own memory.
/// </summary>
internal static class TensorBytes
{
    public const long DefaultChunkBytes = 256L << 20;

    public delegate void ChunkAction(Span<byte> chunk, long byteOffset);

    public static void ForEachChunk(Tensor contiguousCpu, ChunkAction action, long chunkBytes = DefaultChunkBytes)
    {
        using var flat = contiguousCpu.reshape(-1); // a view, since the tensor is contiguous
        long count = flat.numel();
        long elementSize = flat.element_size();
        long perChunk = Math.Max(1, chunkBytes / elementSize);
        for (long start = 0; start < count; start += perChunk)
        {
            using var part = flat.narrow(0, start, Math.Min(perChunk, count - start));
            action(part.bytes, start * elementSize);
        }
    }
}
