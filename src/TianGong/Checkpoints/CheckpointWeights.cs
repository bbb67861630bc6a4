namespace TianGong.Checkpoints;

/// <summary>
/// Every weight file of a model folder opened at once, headers parsed: which file holds which tensor, with what
/// shape and dtype. Enough to check a config against the weights and to plan the load before any tensor exists.
/// </summary>
public sealed class CheckpointWeights : IDisposable
{
    private readonly List<SafeTensorsFile> files;
    private readonly Dictionary<string, SafeTensorsFile> byKey = new(StringComparer.Ordinal);

    private CheckpointWeights(List<SafeTensorsFile> files)
    {
        this.files = files;
        foreach (var file in files)
            foreach (var key in file.Keys)
                if (!byKey.TryAdd(key, file))
                    throw new TianGongException($"{file.Path}: tensor '{FolderFiles.Shown(key)}' is also in {byKey[key].Path}");
    }

    /// <summary>Opens the folder's model.safetensors or its shards (see <see cref="ShardedSafeTensors.WeightFiles"/>).</summary>
    public static CheckpointWeights Open(string dir)
    {
        var opened = new List<SafeTensorsFile>();
        try
        {
            foreach (var path in ShardedSafeTensors.WeightFiles(dir)) opened.Add(SafeTensorsFile.Open(path));
            return new CheckpointWeights(opened);
        }
        catch
        {
            foreach (var file in opened) file.Dispose();
            throw;
        }
    }

    public IEnumerable<string> Keys => byKey.Keys;

    public bool Contains(string key) => byKey.ContainsKey(key);

    public SafeTensorInfo Info(string key) => byKey[key].GetInfo(key);

    public SafeTensorsFile FileOf(string key) => byKey[key];

    /// <summary>Bytes of tensor data in all files together.</summary>
    public long TotalBytes => files.Sum(f => f.DataBytes);

    /// <summary>The dtype of the floating-point tensors when they all share one (null when mixed or none).</summary>
    public ScalarType? FloatingDType
    {
        get
        {
            var types = byKey.Keys.Select(Info).Select(i => i.DType).Where(t => t is ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float32 or ScalarType.Float64).Distinct().ToList();
            return types.Count == 1 ? types[0] : null;
        }
    }

    public void Dispose()
    {
        foreach (var file in files) file.Dispose();
    }
}
