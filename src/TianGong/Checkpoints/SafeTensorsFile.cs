using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;

namespace TianGong.Checkpoints;

/// <summary>
/// A safetensors file opened for lazy reading: the header is parsed and validated on <see cref="Open"/>, and each
/// <see cref="Read"/> or <see cref="ReadInto"/> reads one tensor's bytes with positioned reads straight into libtorch
/// memory. Nothing is memory-mapped, so the file's pages live in the OS page cache, not in this process's resident
/// set: loading a model holds its parameters and nothing else, and never a managed copy of the file.
/// </summary>
public sealed class SafeTensorsFile : IDisposable
{
    private readonly SafeTensorsHeader header;
    private readonly Dictionary<string, SafeTensorInfo> byName;
    private readonly SafeFileHandle handle;
    private readonly long dataOffset;

    public string Path { get; }

    /// <summary>Tensor names, in the order the header lists them.</summary>
    public IReadOnlyList<string> Keys { get; }

    /// <summary>The optional <c>__metadata__</c> string map (empty when the file has none).</summary>
    public IReadOnlyDictionary<string, string> Metadata => header.Metadata;

    /// <summary>Bytes of tensor data the file holds (everything after the header).</summary>
    public long DataBytes { get; }

    private SafeTensorsFile(string path, SafeTensorsHeader header, SafeFileHandle handle, long dataOffset, long dataBytes)
    {
        Path = path;
        this.header = header;
        this.handle = handle;
        this.dataOffset = dataOffset;
        DataBytes = dataBytes;
        byName = header.Tensors.ToDictionary(t => t.Name);
        Keys = header.Tensors.Select(t => t.Name).ToList();
    }

    /// <summary>Opens and validates a safetensors file; a FIFO, device or directory is refused before it is opened.</summary>
    public static SafeTensorsFile Open(string path)
    {
        RegularFile.Require(path, "safetensors file");
        var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);
        try
        {
            long fileLength = RandomAccess.GetLength(handle);
            if (fileLength < 8)
                throw new TianGongException($"{path}: file is {fileLength} bytes, shorter than the 8-byte header length (truncated or not safetensors)");
            Span<byte> prefix = stackalloc byte[8];
            ReadExactly(handle, prefix, 0, path);
            ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
            // The length is not printed: for a file that is not safetensors it is just its first 8 bytes.
            if (headerLength > SafeTensorsHeader.MaxHeaderBytes)
                throw new TianGongException($"{path}: header length is over the 100 MB limit (corrupt or not safetensors)");
            if (headerLength > (ulong)(fileLength - 8))
                throw new TianGongException($"{path}: header length is larger than the file ({fileLength} bytes; truncated or not safetensors)");

            var headerBytes = new byte[headerLength];
            ReadExactly(handle, headerBytes, 8, path);
            long dataOffset = 8 + (long)headerLength;
            var header = SafeTensorsHeader.Parse(headerBytes, fileLength - dataOffset, path);
            return new SafeTensorsFile(path, header, handle, dataOffset, fileLength - dataOffset);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    public bool Contains(string name) => byName.ContainsKey(name);

    public SafeTensorInfo GetInfo(string name) =>
        byName.TryGetValue(name, out var info) ? info : throw new KeyNotFoundException($"{Path}: no tensor named '{name}'");

    /// <summary>Returns a new CPU tensor owning a copy of <paramref name="name"/>'s bytes; the caller disposes it.</summary>
    public Tensor Read(string name)
    {
        var info = GetInfo(name);
        var tensor = torch.empty(info.Shape.ToArray(), info.DType);
        try
        {
            ReadBytesInto(info, tensor);
            return tensor;
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Fills <paramref name="target"/> (a contiguous CPU tensor of the tensor's shape) with <paramref name="name"/>'s
    /// values: read straight into it when the dtypes agree, else through one temporary tensor converted by copy_.
    /// </summary>
    public void ReadInto(string name, Tensor target)
    {
        var info = GetInfo(name);
        if (!info.Shape.SequenceEqual(target.shape))
            throw new TianGongException($"{Path}: tensor '{name}' has shape [{string.Join(", ", info.Shape)}] but the model needs [{string.Join(", ", target.shape)}]");
        if (target.dtype == info.DType && target.is_contiguous() && target.device_type == DeviceType.CPU)
        {
            ReadBytesInto(info, target);
            return;
        }
        using var _ = torch.no_grad();
        using var source = Read(name);
        target.copy_(source);
    }

    private void ReadBytesInto(SafeTensorInfo info, Tensor contiguousCpu)
    {
        ObjectDisposedException.ThrowIf(handle.IsClosed, this);
        long start = dataOffset + info.DataBegin;
        TensorBytes.ForEachChunk(contiguousCpu, (chunk, byteOffset) => ReadExactly(handle, chunk, start + byteOffset, Path));
    }

    private static void ReadExactly(SafeFileHandle handle, Span<byte> buffer, long offset, string path)
    {
        while (buffer.Length > 0)
        {
            int read = RandomAccess.Read(handle, buffer, offset);
            if (read == 0) throw new TianGongException($"{path}: file ended early (truncated while being read?)");
            buffer = buffer[read..];
            offset += read;
        }
    }

    public void Dispose() => handle.Dispose();
}
