namespace TianGong.Checkpoints;

/// <summary>Whole-file save and load of safetensors checkpoints, the format Hugging Face tools read and write.</summary>
public static class SafeTensors
{
    /// <summary>
    /// Saves atomically: the file at <paramref name="path"/> is either the previous one, untouched, or the complete
    /// new one. A failed save (unsupported dtype, full disk) leaves no temporary file behind.
    /// </summary>
    public static void Save(string path, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null) =>
        AtomicFile.Write(path, stream => SafeTensorsWriter.Write(stream, tensors, metadata));

    /// <summary>Loads every tensor as an owned CPU tensor; the caller disposes them.</summary>
    public static Dictionary<string, Tensor> Load(string path)
    {
        using var file = SafeTensorsFile.Open(path);
        var tensors = new Dictionary<string, Tensor>(file.Keys.Count);
        try
        {
            foreach (var name in file.Keys)
                tensors.Add(name, file.Read(name));
            return tensors;
        }
        catch
        {
            foreach (var tensor in tensors.Values) tensor.Dispose();
            throw;
        }
    }
}
