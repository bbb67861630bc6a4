using System.Buffers.Binary;
using System.IO.Compression;

namespace TianGong.Vision;

/// <summary>
/// Reads an IDX file (LeCun's MNIST format, also Fashion-MNIST's): a big-endian magic of two zero bytes, a type byte
/// (0x08 = unsigned byte) and a dimension count, then each dimension as a big-endian int32, then the data row-major.
/// Files ending in .gz are gunzipped on the fly. No .NET library reads IDX, and the format is 20 lines.
/// </summary>
public static class IdxFile
{
    private const byte UnsignedByte = 0x08;

    /// <summary>The tensor stored in <paramref name="path"/>, as uint8 of the file's shape.</summary>
    public static Tensor ReadBytes(string path)
    {
        if (!File.Exists(path)) throw new TianGongException($"{path}: file not found");
        using var file = File.OpenRead(path);
        using Stream stream = path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) ? new GZipStream(file, CompressionMode.Decompress) : file;
        try
        {
            Span<byte> magic = stackalloc byte[4];
            stream.ReadExactly(magic);
            if (magic[0] != 0 || magic[1] != 0) throw new TianGongException($"{path}: not an IDX file (bad magic number)");
            if (magic[2] != UnsignedByte) throw new TianGongException($"{path}: IDX element type 0x{magic[2]:x2} is not unsigned bytes (0x08)");
            int rank = magic[3];
            if (rank is 0 or > 4) throw new TianGongException($"{path}: IDX file has {rank} dimensions (1 to 4 expected)");
            var shape = new long[rank];
            Span<byte> dim = stackalloc byte[4];
            long count = 1;
            for (int i = 0; i < rank; i++)
            {
                stream.ReadExactly(dim);
                shape[i] = BinaryPrimitives.ReadInt32BigEndian(dim);
                if (shape[i] <= 0) throw new TianGongException($"{path}: IDX dimension {i} is {shape[i]}");
                count *= shape[i];
            }
            if (count > Array.MaxLength) throw new TianGongException($"{path}: IDX file of {count} elements is too large");
            var data = new byte[count];
            stream.ReadExactly(data);
            if (stream.ReadByte() != -1) throw new TianGongException($"{path}: IDX file is longer than its header says");
            return tensor(data, shape);
        }
        catch (EndOfStreamException)
        {
            throw new TianGongException($"{path}: IDX file is truncated");
        }
        catch (InvalidDataException e)
        {
            throw new TianGongException($"{path}: corrupt gzip stream ({e.Message})");
        }
    }
}
