using System.Text;

namespace TianGong.Export.Gguf;

/// <summary>GGUF metadata value types (gguf.h's enum gguf_type).</summary>
public enum GgufValueType : uint
{
    UInt8 = 0, Int8 = 1, UInt16 = 2, Int16 = 3, UInt32 = 4, Int32 = 5, Float32 = 6, Bool = 7, String = 8, Array = 9,
    UInt64 = 10, Int64 = 11, Float64 = 12,
}

/// <summary>One tensor to write: its name, shape in PyTorch order (outermost first), ggml type, and its bytes on demand.</summary>
public sealed record GgufTensor(string Name, long[] Shape, GgmlType Type, Func<byte[]> Data);

/// <summary>One tensor as a GGUF file describes it (shape in PyTorch order) and where its bytes are.</summary>
public sealed record GgufTensorInfo(string Name, long[] Shape, GgmlType Type, long Offset)
{
    public long Elements => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>
/// Writes GGUF version 3 (ggml's docs/gguf.md): "GGUF", version, tensor and metadata counts, metadata key/value
/// pairs, tensor infos (dimensions innermost first, as ggml's ne), then the tensor data, each tensor aligned to
/// general.alignment (32). Hand-written: no .NET library writes GGUF.
/// </summary>
public static class GgufWriter
{
    public const uint Magic = 0x46554747; // "GGUF" little-endian
    public const uint Version = 3;
    public const int Alignment = 32;

    public static void Write(string path, IReadOnlyList<(string Key, GgufValueType Type, object Value)> metadata, IReadOnlyList<GgufTensor> tensors)
    {
        AtomicFile.Write(path, stream =>
        {
            using var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
            w.Write(Magic);
            w.Write(Version);
            w.Write((ulong)tensors.Count);
            w.Write((ulong)metadata.Count);
            foreach (var (key, type, value) in metadata)
            {
                WriteString(w, key);
                w.Write((uint)type);
                WriteValue(w, type, value);
            }
            long offset = 0;
            foreach (var t in tensors)
            {
                WriteString(w, t.Name);
                w.Write((uint)t.Shape.Length);
                foreach (var d in t.Shape.Reverse()) w.Write((ulong)d);
                w.Write((uint)t.Type);
                w.Write((ulong)offset);
                offset += Align(GgmlQuants.ByteSize(t.Type, t.Shape.Aggregate(1L, (a, b) => a * b)));
            }
            w.Flush();
            Pad(stream);
            foreach (var t in tensors)
            {
                var bytes = t.Data();
                stream.Write(bytes);
                Pad(stream);
            }
        });
    }

    private static long Align(long n) => (n + Alignment - 1) / Alignment * Alignment;

    private static void Pad(Stream stream)
    {
        long pad = Align(stream.Position) - stream.Position;
        for (long i = 0; i < pad; i++) stream.WriteByte(0);
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    private static void WriteValue(BinaryWriter w, GgufValueType type, object value)
    {
        switch (type)
        {
            case GgufValueType.UInt32: w.Write(Convert.ToUInt32(value)); break;
            case GgufValueType.Int32: w.Write(Convert.ToInt32(value)); break;
            case GgufValueType.Float32: w.Write(Convert.ToSingle(value)); break;
            case GgufValueType.Bool: w.Write((bool)value ? (byte)1 : (byte)0); break;
            case GgufValueType.String: WriteString(w, (string)value); break;
            case GgufValueType.UInt64: w.Write(Convert.ToUInt64(value)); break;
            case GgufValueType.Array:
                var (elementType, items) = ((GgufValueType, System.Collections.IList))value;
                w.Write((uint)elementType);
                w.Write((ulong)items.Count);
                foreach (var item in items) WriteValue(w, elementType, item!);
                break;
            default: throw new TianGongException($"GGUF value type {type} is not written by TianGong");
        }
    }
}

/// <summary>Reads a GGUF file's metadata and tensor infos, and any tensor dequantized to fp32: the check on what we write.</summary>
public sealed class GgufReader
{
    public uint Version { get; }
    public IReadOnlyDictionary<string, object> Metadata { get; }
    public IReadOnlyList<GgufTensorInfo> Tensors { get; }
    private readonly string path;
    private readonly long dataStart;

    private GgufReader(string path, uint version, Dictionary<string, object> metadata, List<GgufTensorInfo> tensors, long dataStart) =>
        (this.path, Version, Metadata, Tensors, this.dataStart) = (path, version, metadata, tensors, dataStart);

    public static GgufReader Open(string path)
    {
        using var stream = File.OpenRead(path);
        using var r = new BinaryReader(stream, Encoding.UTF8);
        try
        {
            if (r.ReadUInt32() != GgufWriter.Magic) throw new TianGongException($"{path}: not a GGUF file (no 'GGUF' magic)");
            uint version = r.ReadUInt32();
            if (version is < 2 or > 3) throw new TianGongException($"{path}: GGUF version {version} is not supported (2 or 3)");
            ulong tensorCount = r.ReadUInt64(), kvCount = r.ReadUInt64();
            if (tensorCount > 1 << 20 || kvCount > 1 << 20) throw new TianGongException($"{path}: implausible counts ({tensorCount} tensors, {kvCount} metadata keys)");
            var metadata = new Dictionary<string, object>();
            for (ulong i = 0; i < kvCount; i++)
            {
                var key = ReadString(r, path);
                metadata[key] = ReadValue(r, (GgufValueType)r.ReadUInt32(), path);
            }
            var tensors = new List<GgufTensorInfo>();
            for (ulong i = 0; i < tensorCount; i++)
            {
                var name = ReadString(r, path);
                uint dims = r.ReadUInt32();
                if (dims > 4) throw new TianGongException($"{path}: tensor '{name}' has {dims} dimensions (ggml allows 4)");
                var shape = new long[dims];
                for (int d = 0; d < dims; d++) shape[dims - 1 - d] = (long)r.ReadUInt64();
                tensors.Add(new GgufTensorInfo(name, shape, (GgmlType)r.ReadUInt32(), (long)r.ReadUInt64()));
            }
            int alignment = metadata.TryGetValue("general.alignment", out var a) ? Convert.ToInt32(a) : GgufWriter.Alignment;
            long start = (stream.Position + alignment - 1) / alignment * alignment;
            return new GgufReader(path, version, metadata, tensors, start);
        }
        catch (EndOfStreamException)
        {
            throw new TianGongException($"{path}: GGUF file ends inside its header");
        }
    }

    /// <summary>A tensor's values, dequantized, in PyTorch (row-major, outermost first) order.</summary>
    public float[] ReadFloats(string name)
    {
        var info = Tensors.FirstOrDefault(t => t.Name == name) ?? throw new TianGongException($"{path}: no tensor '{name}'");
        var bytes = new byte[GgmlQuants.ByteSize(info.Type, info.Elements)];
        using var stream = File.OpenRead(path);
        stream.Position = dataStart + info.Offset;
        stream.ReadExactly(bytes);
        return GgmlQuants.Decode(info.Type, bytes, info.Elements);
    }

    private static string ReadString(BinaryReader r, string path)
    {
        ulong length = r.ReadUInt64();
        if (length > 1 << 24) throw new TianGongException($"{path}: a {length}-byte string in the header");
        return Encoding.UTF8.GetString(r.ReadBytes((int)length));
    }

    private static object ReadValue(BinaryReader r, GgufValueType type, string path) => type switch
    {
        GgufValueType.UInt8 => r.ReadByte(),
        GgufValueType.Int8 => r.ReadSByte(),
        GgufValueType.UInt16 => r.ReadUInt16(),
        GgufValueType.Int16 => r.ReadInt16(),
        GgufValueType.UInt32 => r.ReadUInt32(),
        GgufValueType.Int32 => r.ReadInt32(),
        GgufValueType.Float32 => r.ReadSingle(),
        GgufValueType.Bool => r.ReadByte() != 0,
        GgufValueType.String => ReadString(r, path),
        GgufValueType.UInt64 => r.ReadUInt64(),
        GgufValueType.Int64 => r.ReadInt64(),
        GgufValueType.Float64 => r.ReadDouble(),
        GgufValueType.Array => ReadArray(r, path),
        _ => throw new TianGongException($"{path}: unknown GGUF value type {(uint)type}"),
    };

    private static object[] ReadArray(BinaryReader r, string path)
    {
        var type = (GgufValueType)r.ReadUInt32();
        ulong count = r.ReadUInt64();
        if (count > 1 << 24) throw new TianGongException($"{path}: an array of {count} values in the header");
        var items = new object[count];
        for (ulong i = 0; i < count; i++) items[i] = ReadValue(r, type, path);
        return items;
    }
}
