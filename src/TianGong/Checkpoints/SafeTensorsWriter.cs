namespace TianGong.Checkpoints;

/// <summary>
/// Writes tensors in the safetensors format (https://github.com/huggingface/safetensors#format), one tensor at a time,
/// so peak extra memory is one tensor's CPU copy rather than the whole checkpoint.
/// </summary>
public static class SafeTensorsWriter
{
    /// <summary>
    /// Writes the header, then each tensor's bytes in ordinal key order. Tensors may live on any device and be
    /// non-contiguous; they are copied to contiguous CPU memory one by one. Throws <see cref="TianGongException"/>
    /// for a dtype safetensors (as TianGong supports it) cannot hold, before writing anything.
    /// </summary>
    public static void Write(Stream stream, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var names = tensors.Keys.Order(StringComparer.Ordinal).ToList();
        var header = BuildHeader(names, tensors, metadata);
        stream.Write(header.Encode());
        foreach (var name in names)
        {
            using var scope = torch.NewDisposeScope(); // frees the CPU copy before the next tensor is copied
            var cpu = tensors[name].detach().cpu().contiguous();
            TensorBytes.ForEachChunk(cpu, (chunk, _) => stream.Write(chunk));
        }
    }

    private static SafeTensorsHeader BuildHeader(List<string> names, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata)
    {
        var infos = new List<SafeTensorInfo>(names.Count);
        long offset = 0;
        foreach (var name in names)
        {
            if (name == SafeTensorsHeader.MetadataKey)
                throw new TianGongException($"tensor name '{name}' is reserved for the safetensors metadata map");
            var tensor = tensors[name] ?? throw new TianGongException($"tensor '{name}' is null");
            if (!SafeTensorsDType.TryGetName(tensor.dtype, out _))
                throw new TianGongException($"tensor '{name}' has dtype {tensor.dtype}, which safetensors cannot store (supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
            long byteLength = tensor.numel() * tensor.element_size();
            infos.Add(new SafeTensorInfo(name, tensor.dtype, tensor.shape, offset, offset + byteLength));
            offset += byteLength;
        }
        return new SafeTensorsHeader(infos, metadata ?? new Dictionary<string, string>());
    }
}
