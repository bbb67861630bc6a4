using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace TianGong.Checkpoints;

/// <summary>
/// Saves a state dict as Hugging Face does when it is larger than max_shard_size: model-00001-of-0000N.safetensors
/// files plus model.safetensors.index.json ({"metadata": {"total_size"}, "weight_map": {key: file}}), or a single
/// model.safetensors when everything fits in one shard. transformers and TianGong read either layout.
/// </summary>
public static partial class ShardedSafeTensors
{
    /// <summary>
    /// Parses a size as transformers' max_shard_size does: an integer byte count, or a number with KB/MB/GB/TB
    /// (powers of 1000) or KiB/MiB/GiB/TiB (powers of 1024), e.g. "5GB", "200MiB".
    /// </summary>
    public static long ParseSize(string text, string option = "--max-shard-size")
    {
        var match = SizePattern().Match(text.Trim());
        if (!match.Success)
            throw new TianGongException($"{option}: '{text}' is not a size (expected bytes or a number with KB, MB, GB, TB, KiB, MiB, GiB or TiB, e.g. 5GB)");
        double number = double.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture);
        double unit = match.Groups[2].Value.ToUpperInvariant() switch
        {
            "" or "B" => 1,
            "KB" => 1e3, "MB" => 1e6, "GB" => 1e9, "TB" => 1e12,
            "KIB" => 1L << 10, "MIB" => 1L << 20, "GIB" => 1L << 30, "TIB" => 1L << 40,
            _ => throw new TianGongException($"{option}: unknown unit in '{text}'"),
        };
        long bytes = (long)(number * unit);
        if (bytes <= 0) throw new TianGongException($"{option}: must be positive, got '{text}'");
        return bytes;
    }

    [GeneratedRegex(@"^(\d+(?:\.\d+)?)\s*([A-Za-z]*)$")]
    private static partial Regex SizePattern();

    /// <summary>
    /// Groups tensors into shards in state-dict order as huggingface_hub's split_state_dict_into_shards does: a shard
    /// is closed when the next tensor would push it past the limit, and a tensor larger than the limit gets a shard of its own.
    /// </summary>
    public static List<List<string>> PlanShards(IEnumerable<(string Name, long Bytes)> tensors, long maxShardBytes)
    {
        var shards = new List<List<string>>();
        var current = new List<string>();
        long currentBytes = 0;
        foreach (var (name, bytes) in tensors)
        {
            if (bytes > maxShardBytes)
            {
                shards.Add([name]);
                continue;
            }
            if (currentBytes + bytes > maxShardBytes && current.Count > 0)
            {
                shards.Add(current);
                current = [];
                currentBytes = 0;
            }
            current.Add(name);
            currentBytes += bytes;
        }
        if (current.Count > 0) shards.Add(current);
        return shards;
    }

    public static string ShardName(int index, int count) => CheckpointFiles.ShardName(index, count);

    /// <summary>
    /// The weight files of a folder: model.safetensors, else the shards model.safetensors.index.json lists. Every
    /// shard name must be a plain file name that resolves to a regular file inside the folder; anything else (a path,
    /// '..', a number, a directory, a missing shard) is a one-line error before any shard is opened.
    /// </summary>
    public static IReadOnlyList<string> WeightFiles(string dir)
    {
        if (FolderFiles.Find(dir, CheckpointFiles.Weights, dir) is { } single) return [single];
        var index = FolderFiles.Find(dir, CheckpointFiles.ShardIndex, dir)
            ?? throw new TianGongException($"{dir}: no {CheckpointFiles.Weights} or {CheckpointFiles.ShardIndex} (only safetensors checkpoints are read; pickled .bin files are not)");
        if (ConfigJson.ReadFile(index) is not JsonObject root || root["weight_map"] is not JsonObject map)
            throw new TianGongException($"{index}: missing 'weight_map' (an object of tensor name → shard file)");
        var names = new List<string>();
        foreach (var (key, value) in map)
        {
            if (value is not JsonValue v || !v.TryGetValue<string>(out var name))
                throw new TianGongException($"{index}: weight_map['{FolderFiles.Shown(key)}'] is {ConfigJson.KindOf(value)}, expected a shard file name");
            FolderFiles.RequirePlainName(name, $"{index}: weight_map['{FolderFiles.Shown(key)}']");
            if (!names.Contains(name)) names.Add(name);
        }
        if (names.Count == 0) throw new TianGongException($"{index}: weight_map lists no tensors");
        return names.Select(name => FolderFiles.Require(dir, name, index, $"shard listed in {CheckpointFiles.ShardIndex}")).ToList();
    }

    /// <summary>
    /// Writes the tensors into <paramref name="dir"/> (each file atomically), then removes weight files of an earlier
    /// save that the new layout does not use, so a folder never mixes two checkpoints. Returns the files written.
    /// </summary>
    public static IReadOnlyList<string> Save(string dir, IReadOnlyDictionary<string, Tensor> tensors, long maxShardBytes,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        Directory.CreateDirectory(dir);
        var meta = new Dictionary<string, string> { ["format"] = "pt" };
        foreach (var (k, v) in metadata ?? new Dictionary<string, string>()) meta[k] = v;
        var shards = PlanShards(tensors.Select(kv => (kv.Key, kv.Value.numel() * kv.Value.element_size())), maxShardBytes);
        var written = new List<string>();
        if (shards.Count <= 1)
        {
            SafeTensors.Save(Path.Combine(dir, CheckpointFiles.Weights), tensors, meta);
            written.Add(CheckpointFiles.Weights);
        }
        else
        {
            var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
            long totalSize = 0;
            for (int i = 0; i < shards.Count; i++)
            {
                var file = ShardName(i, shards.Count);
                var part = shards[i].ToDictionary(name => name, name => tensors[name]);
                SafeTensors.Save(Path.Combine(dir, file), part, meta);
                foreach (var (name, t) in part)
                {
                    weightMap[name] = file;
                    totalSize += t.numel() * t.element_size();
                }
                written.Add(file);
            }
            var index = new JsonObject
            {
                ["metadata"] = new JsonObject { ["total_size"] = totalSize },
                ["weight_map"] = new JsonObject(weightMap.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))),
            };
            ConfigJson.WriteAtomically(Path.Combine(dir, CheckpointFiles.ShardIndex), index.ToJsonString(ConfigJson.Options) + "\n");
            written.Add(CheckpointFiles.ShardIndex);
        }
        RemoveStaleWeights(dir, written);
        return written;
    }

    private static void RemoveStaleWeights(string dir, IReadOnlyList<string> keep)
    {
        foreach (var path in Directory.EnumerateFiles(dir))
        {
            var name = Path.GetFileName(path);
            if (CheckpointFiles.IsWeightFile(name) && !keep.Contains(name)) File.Delete(path);
        }
    }
}
