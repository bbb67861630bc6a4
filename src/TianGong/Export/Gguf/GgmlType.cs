namespace TianGong.Export.Gguf;

/// <summary>The ggml tensor types we write and read (ggml.h's enum ggml_type values).</summary>
public enum GgmlType : uint { F32 = 0, F16 = 1, Q4_0 = 2, Q8_0 = 8 }

/// <summary>
/// ggml's block layouts (ggml-common.h, ggml-quants.c): Q8_0 is 32 values as an fp16 scale d = max|x| / 127 and 32
/// int8 q = round(x / d); Q4_0 is 32 values as an fp16 d = (the value of largest magnitude) / −8 and 16 bytes, byte j
/// holding q[j] in its low nibble and q[j + 16] in its high one, q = min(15, trunc(x / d + 8.5)), x = (q − 8) · d.
/// Hand-written: no .NET library writes ggml blocks.
/// </summary>
public static class GgmlQuants
{
    public const int BlockSize = 32;

    public static long ByteSize(GgmlType type, long elements) => type switch
    {
        GgmlType.F32 => elements * 4,
        GgmlType.F16 => elements * 2,
        GgmlType.Q8_0 => elements / BlockSize * (2 + BlockSize),
        GgmlType.Q4_0 => elements / BlockSize * (2 + BlockSize / 2),
        _ => throw new TianGongException($"ggml type {type} is not supported"),
    };

    public static byte[] Encode(GgmlType type, ReadOnlySpan<float> values)
    {
        var bytes = new byte[ByteSize(type, values.Length)];
        switch (type)
        {
            case GgmlType.F32:
                System.Runtime.InteropServices.MemoryMarshal.AsBytes(values).CopyTo(bytes);
                break;
            case GgmlType.F16:
                for (int i = 0; i < values.Length; i++) BitConverter.TryWriteBytes(bytes.AsSpan(2 * i), (Half)values[i]);
                break;
            case GgmlType.Q8_0:
                for (int b = 0; b < values.Length / BlockSize; b++) EncodeQ8Block(values.Slice(b * BlockSize, BlockSize), bytes.AsSpan(b * 34, 34));
                break;
            case GgmlType.Q4_0:
                for (int b = 0; b < values.Length / BlockSize; b++) EncodeQ4Block(values.Slice(b * BlockSize, BlockSize), bytes.AsSpan(b * 18, 18));
                break;
        }
        return bytes;
    }

    private static void EncodeQ8Block(ReadOnlySpan<float> x, Span<byte> block)
    {
        float amax = 0;
        foreach (var v in x) amax = Math.Max(amax, Math.Abs(v));
        float d = amax / 127, id = d != 0 ? 1 / d : 0;
        BitConverter.TryWriteBytes(block, (Half)d);
        for (int j = 0; j < BlockSize; j++) block[2 + j] = (byte)(sbyte)MathF.Round(x[j] * id, MidpointRounding.AwayFromZero);
    }

    private static void EncodeQ4Block(ReadOnlySpan<float> x, Span<byte> block)
    {
        float amax = 0, max = 0;
        foreach (var v in x)
            if (Math.Abs(v) > amax) (amax, max) = (Math.Abs(v), v);
        float d = max / -8, id = d != 0 ? 1 / d : 0;
        BitConverter.TryWriteBytes(block, (Half)d);
        for (int j = 0; j < BlockSize / 2; j++)
        {
            int lo = Math.Min(15, (int)(x[j] * id + 8.5f)), hi = Math.Min(15, (int)(x[j + BlockSize / 2] * id + 8.5f));
            block[2 + j] = (byte)(lo | (hi << 4));
        }
    }

    public static float[] Decode(GgmlType type, ReadOnlySpan<byte> bytes, long elements)
    {
        var values = new float[elements];
        switch (type)
        {
            case GgmlType.F32:
                System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes[..(int)(elements * 4)]).CopyTo(values);
                break;
            case GgmlType.F16:
                for (int i = 0; i < elements; i++) values[i] = (float)BitConverter.ToHalf(bytes.Slice(2 * i, 2));
                break;
            case GgmlType.Q8_0:
                for (int b = 0; b < elements / BlockSize; b++)
                {
                    var block = bytes.Slice(b * 34, 34);
                    float d = (float)BitConverter.ToHalf(block);
                    for (int j = 0; j < BlockSize; j++) values[b * BlockSize + j] = (sbyte)block[2 + j] * d;
                }
                break;
            case GgmlType.Q4_0:
                for (int b = 0; b < elements / BlockSize; b++)
                {
                    var block = bytes.Slice(b * 18, 18);
                    float d = (float)BitConverter.ToHalf(block);
                    for (int j = 0; j < BlockSize / 2; j++)
                    {
                        values[b * BlockSize + j] = ((block[2 + j] & 0xF) - 8) * d;
                        values[b * BlockSize + j + BlockSize / 2] = ((block[2 + j] >> 4) - 8) * d;
                    }
                }
                break;
            default:
                throw new TianGongException($"ggml type {type} is not supported");
        }
        return values;
    }
}
