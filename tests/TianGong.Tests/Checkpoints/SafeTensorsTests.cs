using System.Buffers.Binary;
using System.Text;
using TianGong.Checkpoints;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace TianGong.Tests.Checkpoints;

public sealed class SafeTensorsTests : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("tiangong-st-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    private string PathOf(string name) => Path.Combine(dir, name);

    public static TheoryData<ScalarType> AllDTypes => new()
    {
        ScalarType.Float64, ScalarType.Float32, ScalarType.Float16, ScalarType.BFloat16, ScalarType.Int64,
        ScalarType.Int32, ScalarType.Int16, ScalarType.Int8, ScalarType.Byte, ScalarType.Bool,
    };

    /// <summary>Random bit patterns (NaN payloads, subnormals, -0 included), so "equal" means bit-identical.</summary>
    private static Tensor RandomBits(ScalarType dtype, long[] shape, int seed)
    {
        var tensor = empty(shape, dtype);
        var bytes = tensor.bytes;
        new Random(seed).NextBytes(bytes);
        if (dtype == ScalarType.Bool)
            for (int i = 0; i < bytes.Length; i++) bytes[i] &= 1;
        return tensor;
    }

    private static void AssertBitIdentical(Tensor expected, Tensor actual)
    {
        Assert.Equal(expected.dtype, actual.dtype);
        Assert.Equal(expected.shape, actual.shape);
        Assert.Equal(DeviceType.CPU, actual.device_type);
        using var contiguous = expected.contiguous();
        Assert.True(contiguous.bytes.SequenceEqual(actual.bytes));
    }

    [Theory]
    [MemberData(nameof(AllDTypes))]
    public void RoundTrip_IsBitIdentical_ForMatrixScalarEmptyAndStridedTensors(ScalarType dtype)
    {
        using var matrix = RandomBits(dtype, [3, 5], seed: 1);
        using var scalar = RandomBits(dtype, [], seed: 2);
        using var emptyTensor = RandomBits(dtype, [0, 4], seed: 3);
        using var transposed = RandomBits(dtype, [4, 6], seed: 4).t(); // non-contiguous view
        var tensors = new Dictionary<string, Tensor>
        {
            ["matrix"] = matrix, ["scalar"] = scalar, ["empty"] = emptyTensor, ["transposed"] = transposed,
        };
        var path = PathOf("model.safetensors");

        SafeTensors.Save(path, tensors);
        var loaded = SafeTensors.Load(path);

        Assert.Equal(tensors.Keys.Order(), loaded.Keys.Order());
        foreach (var (name, tensor) in tensors)
            AssertBitIdentical(tensor, loaded[name]);
        Assert.Empty(loaded["scalar"].shape);
        foreach (var tensor in loaded.Values) tensor.Dispose();
    }

    [Fact]
    public void Metadata_AndLazyReader_RoundTrip()
    {
        using var weight = randn(2, 3);
        using var bias = arange(4, dtype: ScalarType.Int64);
        var metadata = new Dictionary<string, string> { ["format"] = "pt", ["step"] = "1200", ["note"] = "quote \" and 天工" };
        var path = PathOf("meta.safetensors");

        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["w"] = weight, ["b"] = bias }, metadata);
        using var file = SafeTensorsFile.Open(path);

        Assert.Equal(metadata, file.Metadata);
        Assert.Equal(["b", "w"], file.Keys);
        var info = file.GetInfo("w");
        Assert.Equal(ScalarType.Float32, info.DType);
        Assert.Equal([2L, 3L], info.Shape);
        Assert.Equal(24, info.ByteLength);
        Assert.Equal(ScalarType.Int64, file.GetInfo("b").DType);
        using var readBack = file.Read("w");
        AssertBitIdentical(weight, readBack);
        Assert.Throws<KeyNotFoundException>(() => file.GetInfo("missing"));
    }

    /// <summary>
    /// A file assembled by hand from the spec: u64 LE header length, compact JSON with __metadata__, spaces to a
    /// multiple of 8, then the tensors back to back in key order. Both directions must agree with it byte for byte.
    /// </summary>
    [Fact]
    public void HeaderLayout_MatchesHandBuiltFile()
    {
        const string json = "{\"__metadata__\":{\"format\":\"pt\"}," +
                            "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}," +
                            "\"b\":{\"dtype\":\"I16\",\"shape\":[1,3],\"data_offsets\":[8,14]}}";
        var headerBytes = Encoding.UTF8.GetBytes(json);
        int padded = (headerBytes.Length + 7) / 8 * 8;
        using var expected = new MemoryStream();
        var lengthPrefix = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(lengthPrefix, (ulong)padded);
        expected.Write(lengthPrefix);
        expected.Write(headerBytes);
        expected.Write(Enumerable.Repeat((byte)' ', padded - headerBytes.Length).ToArray());
        var data = new byte[14];
        BinaryPrimitives.WriteSingleLittleEndian(data.AsSpan(0), 1.5f);
        BinaryPrimitives.WriteSingleLittleEndian(data.AsSpan(4), -2.25f);
        BinaryPrimitives.WriteInt16LittleEndian(data.AsSpan(8), 7);
        BinaryPrimitives.WriteInt16LittleEndian(data.AsSpan(10), -300);
        BinaryPrimitives.WriteInt16LittleEndian(data.AsSpan(12), 32767);
        expected.Write(data);
        var handBuilt = PathOf("hand.safetensors");
        File.WriteAllBytes(handBuilt, expected.ToArray());

        var loaded = SafeTensors.Load(handBuilt);
        Assert.Equal([1.5f, -2.25f], loaded["a"].data<float>().ToArray());
        Assert.Equal([1L, 3L], loaded["b"].shape);
        Assert.Equal(new short[] { 7, -300, 32767 }, loaded["b"].data<short>().ToArray());

        var ours = PathOf("ours.safetensors");
        SafeTensors.Save(ours, loaded, new Dictionary<string, string> { ["format"] = "pt" });
        Assert.Equal(expected.ToArray(), File.ReadAllBytes(ours));
        Assert.Equal(0, (8 + padded) % 8);
        foreach (var tensor in loaded.Values) tensor.Dispose();
    }

    private string WriteRaw(string json, int dataBytes, string name = "bad.safetensors")
    {
        var header = Encoding.UTF8.GetBytes(json);
        var bytes = new byte[8 + header.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)header.Length);
        header.CopyTo(bytes, 8);
        var path = PathOf(name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    [Theory]
    [InlineData("{\"a\": {\"dtype\": ", 0, "not valid JSON")]
    [InlineData("[1, 2]", 0, "expected an object")]
    [InlineData("{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "unknown dtype 'F8_E4M3'")]
    [InlineData("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}", 4, "out of range")]
    [InlineData("{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4, "end 0 < begin 4")]
    [InlineData("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}", 6, "overlapping tensor 'a'")]
    [InlineData("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6]}}", 6, "do not cover the data region")]
    [InlineData("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 6, "do not cover the data region")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "byte size 4 != product of shape [2] x 4 bytes")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "expected non-negative integers")]
    [InlineData("{\"__metadata__\":{\"step\":5}}", 0, "expected a string")]
    public void CorruptHeader_IsRejectedNamingFileAndProblem(string json, int dataBytes, string problem)
    {
        var path = WriteRaw(json, dataBytes);

        var error = Assert.Throws<TianGongException>(() => SafeTensors.Load(path));

        Assert.Contains(path, error.Message);
        Assert.Contains(problem, error.Message);
    }

    [Fact]
    public void FileShorterThanLengthPrefix_IsRejected()
    {
        var path = PathOf("short.safetensors");
        File.WriteAllBytes(path, [1, 2, 3]);

        var error = Assert.Throws<TianGongException>(() => SafeTensorsFile.Open(path));

        Assert.Contains(path, error.Message);
        Assert.Contains("shorter than the 8-byte header length", error.Message);
    }

    [Theory]
    [InlineData(1000UL, "larger than the file")]
    [InlineData(200_000_000UL, "over the 100 MB limit")]
    public void ImplausibleHeaderLength_IsRejectedBeforeAllocating(ulong headerLength, string problem)
    {
        var path = PathOf("length.safetensors");
        var bytes = new byte[64];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, headerLength);
        File.WriteAllBytes(path, bytes);

        var error = Assert.Throws<TianGongException>(() => SafeTensorsFile.Open(path));

        Assert.Contains(path, error.Message);
        Assert.Contains(problem, error.Message);
    }

    [Fact]
    public void TruncatedFile_IsRejectedNamingTheFile()
    {
        using var weight = randn(16, 16);
        var path = PathOf("truncated.safetensors");
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["w"] = weight });
        using (var stream = new FileStream(path, FileMode.Open))
            stream.SetLength(stream.Length - 10); // as an interrupted copy would leave it

        var error = Assert.Throws<TianGongException>(() => SafeTensors.Load(path));

        Assert.Contains(path, error.Message);
        Assert.Contains("out of range", error.Message);
    }

    [Fact]
    public void FailedSave_LeavesPreviousFileIntact_AndNoTempFiles()
    {
        using var good = randn(4);
        var path = PathOf("ckpt.safetensors");
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["w"] = good });
        var before = File.ReadAllBytes(path);

        using var complexTensor = zeros(new long[] { 2 }, ScalarType.ComplexFloat32);
        var error = Assert.Throws<TianGongException>(() =>
            SafeTensors.Save(path, new Dictionary<string, Tensor> { ["w"] = good, ["z"] = complexTensor }));

        Assert.Contains("'z'", error.Message);
        Assert.Contains("ComplexFloat32", error.Message);
        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Equal([path], Directory.GetFiles(dir));
    }

    [Fact]
    public void Save_OverwritesExistingFile_WithoutLeavingTempFiles()
    {
        var path = PathOf("ckpt.safetensors");
        using var first = ones(3);
        using var second = full(5, 2.0f);

        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["w"] = first });
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["w"] = second });

        Assert.Equal([path], Directory.GetFiles(dir));
        var loaded = SafeTensors.Load(path);
        AssertBitIdentical(second, loaded["w"]);
        loaded["w"].Dispose();
    }

    /// <summary>
    /// Tensor.bytes is a Span and stops at 2 GB, so both directions walk tensors in chunks. A real 2 GB round trip takes
    /// about a minute on the CI machine (mostly fsync), so the chunk walk is checked here with tiny chunks instead.
    /// </summary>
    [Fact]
    public void ChunkWalk_CoversEveryByteOnceInOrder()
    {
        using var source = arange(0, 1001, dtype: ScalarType.Int16).reshape(7, 143);
        var visited = new List<(long Offset, int Length)>();
        var copy = new List<byte>();

        TensorBytes.ForEachChunk(source, (chunk, offset) =>
        {
            visited.Add((offset, chunk.Length));
            copy.AddRange(chunk.ToArray());
        }, chunkBytes: 64);

        Assert.All(visited, v => Assert.Equal(0, v.Length % 2)); // never splits an element
        Assert.Equal(Enumerable.Range(0, visited.Count).Select(i => i * 64L), visited.Select(v => v.Offset));
        Assert.Equal(source.bytes.ToArray(), copy);
    }
}
