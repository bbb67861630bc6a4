using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;

namespace TianGong.Data;

/// <summary>One shard file mapped read-only; reads widen its uint16/uint32 tokens to long.</summary>
internal sealed unsafe class MappedShard : IDisposable
{
    private readonly MemoryMappedFile file;
    private readonly MemoryMappedViewAccessor view;
    private readonly byte* start;
    private readonly int bytesPerToken;

    public MappedShard(string path, long tokens, int bytesPerToken)
    {
        Tokens = tokens;
        this.bytesPerToken = bytesPerToken;
        file = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        view = file.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        byte* pointer = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
        start = pointer + view.PointerOffset;
    }

    public long Tokens { get; }

    /// <summary>Copies <c>destination.Length</c> tokens from token <paramref name="offset"/>; the caller keeps it in range.</summary>
    public void Read(long offset, Span<long> destination)
    {
        var bytes = new ReadOnlySpan<byte>(start + offset * bytesPerToken, destination.Length * bytesPerToken);
        if (bytesPerToken == 2)
            for (var i = 0; i < destination.Length; i++) destination[i] = BinaryPrimitives.ReadUInt16LittleEndian(bytes[(2 * i)..]);
        else
            for (var i = 0; i < destination.Length; i++) destination[i] = BinaryPrimitives.ReadUInt32LittleEndian(bytes[(4 * i)..]);
    }

    public void Dispose()
    {
        view.SafeMemoryMappedViewHandle.ReleasePointer();
        view.Dispose();
        file.Dispose();
    }
}
