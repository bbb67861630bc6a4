namespace TianGong.Checkpoints;

/// <summary>
/// One tensor's entry in a safetensors header. <paramref name="DataBegin"/> and <paramref name="DataEnd"/> are byte
/// offsets relative to the start of the data region (just after the header), as the format stores them.
/// </summary>
public sealed record SafeTensorInfo(string Name, ScalarType DType, IReadOnlyList<long> Shape, long DataBegin, long DataEnd)
{
    public long ByteLength => DataEnd - DataBegin;
}
