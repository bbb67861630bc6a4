namespace TianGong.Checkpoints;

/// <summary>The safetensors dtype names TianGong reads and writes, and their libtorch equivalents.</summary>
internal static class SafeTensorsDType
{
    private static readonly (string Name, ScalarType Type, int Size)[] Table =
    [
        ("F64", ScalarType.Float64, 8),
        ("F32", ScalarType.Float32, 4),
        ("F16", ScalarType.Float16, 2),
        ("BF16", ScalarType.BFloat16, 2),
        ("I64", ScalarType.Int64, 8),
        ("I32", ScalarType.Int32, 4),
        ("I16", ScalarType.Int16, 2),
        ("I8", ScalarType.Int8, 1),
        ("U8", ScalarType.Byte, 1),
        ("BOOL", ScalarType.Bool, 1),
    ];

    public static bool TryParse(string name, out ScalarType type, out int elementSize)
    {
        foreach (var entry in Table)
        {
            if (entry.Name == name)
            {
                (type, elementSize) = (entry.Type, entry.Size);
                return true;
            }
        }
        (type, elementSize) = (default, 0);
        return false;
    }

    /// <summary>Bytes per element of a dtype safetensors stores.</summary>
    public static int ElementSize(ScalarType type)
    {
        foreach (var entry in Table)
            if (entry.Type == type) return entry.Size;
        throw new TianGongException($"dtype {type}: not one that safetensors stores");
    }

    public static bool TryGetName(ScalarType type, out string name)
    {
        foreach (var entry in Table)
        {
            if (entry.Type == type)
            {
                name = entry.Name;
                return true;
            }
        }
        name = "";
        return false;
    }
}
