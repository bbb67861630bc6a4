using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace TianGong.Checkpoints;

/// <summary>
/// A safetensors file opened for lazy reading: the header is parsed and validated on <see cref="Open"/>, and each
/// <see cref="Read"/> or <see cref="ReadInto"/> reads one tensor's bytes with positioned reads straight into libtorch
/// memory. Nothing is memory-mapped, so the file's pages live in the OS page cache, not in this process's resident
/// set: loading a model holds its parameters and nothing else, and never a managed copy of the file.
/// </summary>
public sealed partial class SafeTensorsFile : IDisposable
{
    private readonly SafeTensorsHeader header;
    private readonly Dictionary<string, SafeTensorInfo> byName;
    private readonly SafeFileHandle handle;
    private readonly long dataOffset;
    private readonly long fileLength;
    private readonly Dictionary<ScalarType, Tensor> mappings = []; // the whole file as one tensor per dtype, for Map

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
        fileLength = dataOffset + dataBytes;
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

    /// <summary>
    /// The tensor without copying it: a view into a private (copy-on-write) memory mapping of the file. Its pages
    /// come from the OS page cache (mapped at once where the kernel can, see Populate), are shared with every other
    /// process mapping the same file, and writes (training) stay in this process. The mapping lives as long as any view does, after this file is
    /// disposed too. Null when the tensor's offset is not a multiple of its element size (then use
    /// <see cref="Read"/>): safetensors files written by TianGong or transformers are aligned.
    /// </summary>
    /// <remarks>
    /// The file must not be truncated in place while mapped (reading a page past the end would kill the process);
    /// TianGong and the Hugging Face hub replace files by renaming, which leaves a mapped file intact.
    /// </remarks>
    /// <param name="populate">False leaves every page out of memory until used (streamed layers populate them ahead of use).</param>
    public Tensor? Map(string name, bool populate = true)
    {
        ObjectDisposedException.ThrowIf(handle.IsClosed, this);
        var info = GetInfo(name);
        SafeTensorsDType.TryGetName(info.DType, out var dtypeName);
        SafeTensorsDType.TryParse(dtypeName, out _, out int elementSize);
        long byteOffset = dataOffset + info.DataBegin;
        if (byteOffset % elementSize != 0) return null;
        if (!mappings.TryGetValue(info.DType, out var whole))
        {
            whole = torch.from_file(Path, shared: false, size: fileLength / elementSize, dtype: info.DType, device: CPU);
            mappings[info.DType] = whole;
        }
        var shape = info.Shape.ToArray();
        var strides = new long[shape.Length];
        long stride = 1;
        for (int i = shape.Length - 1; i >= 0; i--)
        {
            strides[i] = stride;
            stride *= shape[i];
        }
        var view = whole.as_strided(shape, strides, byteOffset / elementSize);
        if (populate) Populate(view);
        return view;
    }

    /// <summary>
    /// Maps the view's pages now (Linux 5.14+ MADV_POPULATE_READ), from the page cache, in one call per chunk: the
    /// load then leaves the weights resident, and the first forward does not take a page fault per 64 KiB. Where the
    /// kernel lacks it, nothing happens and pages come in on first use as before.
    /// </summary>
    public static void Populate(Tensor view) => Advise(view, advice: 22); // MADV_POPULATE_READ

    /// <summary>
    /// Drops the resident pages of a view made by <see cref="Map"/> whose values were copied elsewhere (MADV_DONTNEED:
    /// for a mapping nothing wrote to, the pages simply leave this process; the file and its page cache are untouched).
    /// </summary>
    public static void Release(Tensor mapped) => Advise(mapped, advice: 4); // MADV_DONTNEED

    private static unsafe void Advise(Tensor view, int advice)
    {
        if (!OperatingSystem.IsLinux() || view.numel() == 0) return;
        TensorBytes.ForEachChunk(view, (chunk, _) =>
        {
            fixed (byte* p = chunk)
            {
                long start = ((long)p + 4095) & ~4095L, end = ((long)p + chunk.Length) & ~4095L; // whole pages inside the view
                if (end > start) madvise((IntPtr)start, (IntPtr)(end - start), advice);
            }
        });
    }

    [LibraryImport("libc")]
    private static partial int madvise(IntPtr address, IntPtr length, int advice);

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

    public void Dispose()
    {
        foreach (var whole in mappings.Values) whole.Dispose(); // views made by Map keep the mapping alive
        mappings.Clear();
        handle.Dispose();
    }
}
