using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;

namespace TianGong.Checkpoints;

/// <summary>
/// A safetensors file opened for lazy reading: the header is parsed and validated on <see cref="Open"/>, the data is
/// memory-mapped, and each <see cref="Read"/> copies one tensor straight from the mapping into libtorch memory.
/// Loading a 7B checkpoint this way never holds more than the tensors asked for, and never a managed copy of the file.
/// </summary>
public sealed unsafe class SafeTensorsFile : IDisposable
{
    private readonly SafeTensorsHeader header;
    private readonly Dictionary<string, SafeTensorInfo> byName;
    private readonly MemoryMappedFile mapping;
    private readonly MemoryMappedViewAccessor view;
    private readonly byte* dataStart;
    private bool disposed;

    public string Path { get; }

    /// <summary>Tensor names, in the order the header lists them.</summary>
    public IReadOnlyList<string> Keys { get; }

    /// <summary>The optional <c>__metadata__</c> string map (empty when the file has none).</summary>
    public IReadOnlyDictionary<string, string> Metadata => header.Metadata;

    private SafeTensorsFile(string path, SafeTensorsHeader header, MemoryMappedFile mapping, MemoryMappedViewAccessor view, long dataOffset)
    {
        Path = path;
        this.header = header;
        this.mapping = mapping;
        this.view = view;
        byName = header.Tensors.ToDictionary(t => t.Name);
        Keys = header.Tensors.Select(t => t.Name).ToList();
        byte* basePointer = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref basePointer);
        dataStart = basePointer + view.PointerOffset + dataOffset;
    }

    public static SafeTensorsFile Open(string path)
    {
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        try
        {
            long fileLength = stream.Length;
            if (fileLength < 8)
                throw new TianGongException($"{path}: file is {fileLength} bytes, shorter than the 8-byte header length (truncated or not safetensors)");
            Span<byte> prefix = stackalloc byte[8];
            stream.ReadExactly(prefix);
            ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
            if (headerLength > SafeTensorsHeader.MaxHeaderBytes)
                throw new TianGongException($"{path}: header length {headerLength} bytes is over the 100 MB limit (corrupt or not safetensors)");
            if (headerLength > (ulong)(fileLength - 8))
                throw new TianGongException($"{path}: header length {headerLength} bytes is larger than the file ({fileLength} bytes; truncated?)");

            var headerBytes = new byte[headerLength];
            stream.ReadExactly(headerBytes);
            long dataOffset = 8 + (long)headerLength;
            var header = SafeTensorsHeader.Parse(headerBytes, fileLength - dataOffset, path);

            var mapping = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
            try
            {
                var view = mapping.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
                return new SafeTensorsFile(path, header, mapping, view, dataOffset);
            }
            catch
            {
                mapping.Dispose();
                throw;
            }
        }
        catch
        {
            stream.Dispose(); // a no-op when the mapping already took it over and was disposed
            throw;
        }
    }

    public bool Contains(string name) => byName.ContainsKey(name);

    public SafeTensorInfo GetInfo(string name) =>
        byName.TryGetValue(name, out var info) ? info : throw new KeyNotFoundException($"{Path}: no tensor named '{name}'");

    /// <summary>Returns a new CPU tensor owning a copy of <paramref name="name"/>'s bytes; the caller disposes it.</summary>
    public Tensor Read(string name)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        var info = GetInfo(name);
        var tensor = torch.empty(info.Shape.ToArray(), info.DType);
        var source = (nint)(dataStart + info.DataBegin);
        TensorBytes.ForEachChunk(tensor, (chunk, byteOffset) =>
            new ReadOnlySpan<byte>((byte*)source + byteOffset, chunk.Length).CopyTo(chunk));
        return tensor;
    }

    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        view.SafeMemoryMappedViewHandle.ReleasePointer();
        view.Dispose();
        mapping.Dispose();
    }
}
