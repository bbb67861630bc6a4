using System.Buffers.Binary;
using System.Text;
using System.Text.Json;

namespace TianGong.Checkpoints;

/// <summary>
/// The JSON header of a safetensors file: building it for the writer, and parsing plus validating it for the reader.
/// Everything a corrupt file could make us do (allocate, map, copy out of range) is ruled out here, before any tensor exists.
/// </summary>
internal sealed record SafeTensorsHeader(IReadOnlyList<SafeTensorInfo> Tensors, IReadOnlyDictionary<string, string> Metadata)
{
    public const string MetadataKey = "__metadata__";

    private static readonly System.Text.UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>Largest header we accept, as the reference implementation does: guards against allocating garbage lengths.</summary>
    public const long MaxHeaderBytes = 100_000_000;

    /// <summary>
    /// The 8-byte little-endian length followed by the compact JSON header, padded with spaces so the data region
    /// starts on an 8-byte boundary (lets readers map tensors of any dtype without misalignment).
    /// </summary>
    public byte[] Encode()
    {
        using var json = new MemoryStream();
        using (var writer = new Utf8JsonWriter(json))
        {
            writer.WriteStartObject();
            if (Metadata.Count > 0)
            {
                writer.WriteStartObject(MetadataKey);
                foreach (var (key, value) in Metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                    writer.WriteString(key, value);
                writer.WriteEndObject();
            }
            foreach (var info in Tensors)
            {
                writer.WriteStartObject(info.Name);
                SafeTensorsDType.TryGetName(info.DType, out var dtypeName);
                writer.WriteString("dtype", dtypeName);
                writer.WriteStartArray("shape");
                foreach (var dim in info.Shape) writer.WriteNumberValue(dim);
                writer.WriteEndArray();
                writer.WriteStartArray("data_offsets");
                writer.WriteNumberValue(info.DataBegin);
                writer.WriteNumberValue(info.DataEnd);
                writer.WriteEndArray();
                writer.WriteEndObject();
            }
            writer.WriteEndObject();
        }
        int jsonLength = (int)json.Length;
        int paddedLength = (jsonLength + 7) / 8 * 8;
        var bytes = new byte[8 + paddedLength];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)paddedLength);
        json.GetBuffer().AsSpan(0, jsonLength).CopyTo(bytes.AsSpan(8));
        bytes.AsSpan(8 + jsonLength).Fill((byte)' ');
        return bytes;
    }

    /// <summary>Parses a header and checks it against a data region of <paramref name="dataLength"/> bytes.</summary>
    public static SafeTensorsHeader Parse(ReadOnlySpan<byte> headerJson, long dataLength, string path)
    {
        JsonDocument document;
        try
        {
            // Strict UTF-8 first: the JSON reader checks it only when a string is read, and then throws InvalidOperationException.
            StrictUtf8.GetCharCount(headerJson);
            document = JsonDocument.Parse(headerJson.ToArray());
        }
        catch (DecoderFallbackException e)
        {
            throw Error(path, $"header is not valid UTF-8 (first bad byte at offset {8 + e.Index}; a tensor name must be UTF-8 text)");
        }
        catch (JsonException e)
        {
            throw Error(path, $"header is not valid JSON ({e.Message})");
        }
        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object)
                throw Error(path, $"header is a JSON {document.RootElement.ValueKind}, expected an object");

            var metadata = new Dictionary<string, string>();
            var tensors = new List<SafeTensorInfo>();
            var seen = new HashSet<string>();
            foreach (var property in document.RootElement.EnumerateObject())
            {
                if (!seen.Add(property.Name))
                    throw Error(path, $"header lists '{property.Name}' twice");
                if (property.Name == MetadataKey)
                    ReadMetadata(property.Value, metadata, path);
                else
                    tensors.Add(ReadTensor(property.Name, property.Value, dataLength, path));
            }
            CheckCoverage(tensors, dataLength, path);
            return new SafeTensorsHeader(tensors, metadata);
        }
    }

    private static void ReadMetadata(JsonElement element, Dictionary<string, string> metadata, string path)
    {
        if (element.ValueKind != JsonValueKind.Object)
            throw Error(path, $"'{MetadataKey}' must be an object of strings");
        foreach (var entry in element.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.String)
                throw Error(path, $"'{MetadataKey}' entry '{entry.Name}' is a {entry.Value.ValueKind}, expected a string");
            metadata[entry.Name] = entry.Value.GetString()!;
        }
    }

    private static SafeTensorInfo ReadTensor(string name, JsonElement element, long dataLength, string path)
    {
        if (element.ValueKind != JsonValueKind.Object)
            throw Error(path, $"tensor '{name}' entry is a {element.ValueKind}, expected an object");
        if (!element.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
            throw Error(path, $"tensor '{name}' has no string 'dtype'");
        var dtypeName = dtypeElement.GetString()!;
        if (!SafeTensorsDType.TryParse(dtypeName, out var dtype, out int elementSize))
            throw Error(path, $"tensor '{name}' has unknown dtype '{dtypeName}' (supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");

        var shape = ReadIntegers(element, "shape", name, path);
        var offsets = ReadIntegers(element, "data_offsets", name, path);
        if (offsets.Length != 2)
            throw Error(path, $"tensor '{name}' data_offsets has {offsets.Length} entries, expected [begin, end]");
        var (begin, end) = (offsets[0], offsets[1]);
        if (end < begin)
            throw Error(path, $"tensor '{name}' data_offsets end {end} < begin {begin}");
        if (end > dataLength)
            throw Error(path, $"tensor '{name}' data_offsets [{begin}, {end}] out of range: the data region holds {dataLength} bytes");

        long expected;
        try
        {
            expected = checked(shape.Aggregate(1L, (product, dim) => product * dim) * elementSize);
        }
        catch (OverflowException)
        {
            throw Error(path, $"tensor '{name}' shape [{string.Join(", ", shape)}] overflows a 64-bit byte count");
        }
        if (expected != end - begin)
            throw Error(path, $"tensor '{name}' byte size {end - begin} != product of shape [{string.Join(", ", shape)}] x {elementSize} bytes ({dtypeName}) = {expected}");
        return new SafeTensorInfo(name, dtype, shape, begin, end);
    }

    private static long[] ReadIntegers(JsonElement element, string field, string tensor, string path)
    {
        if (!element.TryGetProperty(field, out var array) || array.ValueKind != JsonValueKind.Array)
            throw Error(path, $"tensor '{tensor}' has no array '{field}'");
        var values = new long[array.GetArrayLength()];
        int i = 0;
        foreach (var item in array.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt64(out values[i]) || values[i] < 0)
                throw Error(path, $"tensor '{tensor}' {field} holds {item.GetRawText()}, expected non-negative integers");
            i++;
        }
        return values;
    }

    /// <summary>Tensors must tile the data region exactly: no overlap (aliasing), no gaps (hidden bytes), nothing after the last.</summary>
    private static void CheckCoverage(List<SafeTensorInfo> tensors, long dataLength, string path)
    {
        long covered = 0;
        string? previous = null;
        foreach (var info in tensors.OrderBy(t => t.DataBegin).ThenBy(t => t.DataEnd))
        {
            if (info.DataBegin < covered)
                throw Error(path, $"tensor '{info.Name}' data_offsets [{info.DataBegin}, {info.DataEnd}] overlapping tensor '{previous}' (which ends at {covered})");
            if (info.DataBegin > covered)
                throw Error(path, $"data_offsets do not cover the data region: bytes [{covered}, {info.DataBegin}) before tensor '{info.Name}' belong to no tensor");
            covered = info.DataEnd;
            previous = info.Name;
        }
        if (covered != dataLength)
            throw Error(path, $"data_offsets do not cover the data region: tensors end at byte {covered} but the data region holds {dataLength} bytes");
    }

    private static TianGongException Error(string path, string problem) => new($"{path}: {problem}");
}
