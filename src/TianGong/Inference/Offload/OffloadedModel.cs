using System.Text.RegularExpressions;
using TianGong.Checkpoints;
using TianGong.Models.Layers;

namespace TianGong.Inference.Offload;

/// <summary>
/// How a model is split under a memory cap: the first <see cref="ResidentLayers"/> decoder layers stay in memory with
/// everything outside the layers (embeddings, final norm, LM head) and every layer's vectors (norms, biases); the
/// matrices of the layers after them are streamed from the file, at most two layers at a time.
/// </summary>
/// <param name="AlwaysBytes">What stays in memory whatever the cap: everything outside the layers' matrices.</param>
/// <param name="ResidentBytes">Weights always in memory (that and the resident layers), in the dtype the model runs in.</param>
/// <param name="StreamedBytes">Largest streamed layer's matrices as the file stores them, times two (running + prefetched), plus one converted matrix when the dtypes differ.</param>
public sealed record OffloadPlan(int LayerCount, int ResidentLayers, long AlwaysBytes, long ResidentBytes, long StreamedBytes, long TotalBytes, IReadOnlySet<string> StreamedKeys)
{
    public IReadOnlyList<int> StreamedLayers => Enumerable.Range(ResidentLayers, LayerCount - ResidentLayers).ToList();

    public long PeakWeightBytes => ResidentBytes + StreamedBytes;
}

/// <summary>
/// Inference beyond memory (<c>--max-memory</c>): loads a model folder so that its weights take at most a given
/// number of bytes, streaming the remaining decoder layers from the memory-mapped safetensors file as they run.
/// Greedy decoding gives the same tokens as the model loaded whole: the same values go through the same operations.
/// </summary>
/// <remarks>
/// The cap covers weights. The KV cache, activations and the runtime itself (.NET, libtorch: a few hundred MB) come on
/// top; the benchmark reports the measured peak resident set beside the cap.
/// </remarks>
public static partial class OffloadedModel
{
    [GeneratedRegex(@"^(?:.*\.)?(?:layers|h)\.(?<index>\d+)\.")]
    private static partial Regex BlockKey();

    /// <summary>
    /// Loads <paramref name="dir"/> under <paramref name="maxBytes"/> of weights: whole when it fits, else with its
    /// last layers streamed. A cap below what must stay in memory is an error naming the sizes.
    /// </summary>
    public static LoadedModel Load(string dir, ScalarType? dtype, long maxBytes) => Load(dir, dtype, maxBytes, out _);

    /// <summary>Whether <paramref name="model"/> has layers streamed from its file (their weights must stay there).</summary>
    public static bool Streams(nn.Module model) => model.modules().Any(m => m is StreamedLinear);

    public static LoadedModel Load(string dir, ScalarType? dtype, long maxBytes, out OffloadPlan plan)
    {
        if (!Directory.Exists(dir))
            throw new TianGongException(File.Exists(dir) ? $"{dir}: is a file; expected a model folder" : $"{dir}: model folder not found");
        var configPath = FolderFiles.Require(dir, ModelFolder.ConfigFile, dir, "config.json");
        if (ConfigJson.ReadFile(configPath)[Compression.Quantization.GptqConfig.ConfigKey] is not null)
            throw new TianGongException($"{dir}: is quantized; --max-memory streams float weights (load it without --max-memory)");
        using (var weights = CheckpointWeights.Open(dir))
            plan = Plan(weights, dtype ?? ModelFolder.DeclaredDType(dir) ?? weights.FloatingDType ?? ScalarType.Float32, maxBytes, dir);
        if (plan.ResidentLayers == plan.LayerCount) return ModelFolder.Load(dir, dtype);

        var streamedKeys = plan.StreamedKeys;
        var loaded = ModelFolder.Load(dir, dtype, buildOnMeta: true, streamed: streamedKeys.Contains);
        try
        {
            var streamer = new LayerStreamer(plan.StreamedLayers);
            var layers = string.Join("|", plan.StreamedLayers);
            LayerReplacement.Replace(loaded.Module, LayerSelector.Regex($@"(?:.*\.)?(?:layers|h)\.(?:{layers})\..+"), (name, parts) =>
            {
                int layer = int.Parse(BlockKey().Match(name + ".").Groups["index"].Value);
                streamer.Add(layer, parts.Weight);
                return new StreamedLinear(parts, streamer, layer);
            });
            return loaded;
        }
        catch
        {
            loaded.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The split of the checkpoint in <paramref name="weights"/> under <paramref name="maxBytes"/>, from the headers
    /// alone: as many leading layers resident as fit beside the always-resident part and two streamed layers.
    /// </summary>
    public static OffloadPlan Plan(CheckpointWeights weights, ScalarType dtype, long maxBytes, string where)
    {
        int targetSize = SafeTensorsDType.ElementSize(dtype);
        long always = 0;
        var resident = new SortedDictionary<int, long>();   // layer → its matrices, in memory in the run dtype
        var streamed = new SortedDictionary<int, long>();   // layer → its matrices, as the file stores them
        var keys = new SortedDictionary<int, List<string>>();
        long largestMatrix = 0;
        foreach (var key in weights.Keys)
        {
            var info = weights.Info(key);
            long count = info.Shape.Aggregate(1L, (a, b) => a * b);
            long inMemory = count * (IsFloating(info.DType) ? targetSize : SafeTensorsDType.ElementSize(info.DType));
            var m = BlockKey().Match(key);
            if (!m.Success || info.Shape.Count != 2 || !IsFloating(info.DType))
            {
                always += inMemory;
                continue;
            }
            int layer = int.Parse(m.Groups["index"].Value);
            resident[layer] = resident.GetValueOrDefault(layer) + inMemory;
            streamed[layer] = streamed.GetValueOrDefault(layer) + info.ByteLength;
            (keys.TryGetValue(layer, out var list) ? list : keys[layer] = []).Add(key);
            if (info.DType != dtype) largestMatrix = Math.Max(largestMatrix, inMemory);
        }
        if (keys.Count == 0) throw new TianGongException($"{where}: no decoder layers (layers.N or h.N) found to stream under --max-memory");
        var order = keys.Keys.ToList();
        long total = always + resident.Values.Sum();
        for (int kept = order.Count; kept >= 0; kept--)
        {
            long inMemory = always + order.Take(kept).Sum(l => resident[l]);
            long inFlight = kept == order.Count ? 0 : 2 * order.Skip(kept).Max(l => streamed[l]) + largestMatrix;
            if (inMemory + inFlight <= maxBytes)
                return new OffloadPlan(order.Count, kept, always, inMemory, inFlight, total,
                    order.Skip(kept).SelectMany(l => keys[l]).ToHashSet());
        }
        long need = always + 2 * streamed.Values.Max() + largestMatrix;
        throw new TianGongException($"--max-memory {Mb(maxBytes)}: too small for {where}: embeddings, LM head and norms ({Mb(always)}) stay in memory, "
            + $"and two streamed layers ({Mb(need - always)}) run beside them, so at least {Mb(need)} is needed");
    }

    private static bool IsFloating(ScalarType t) => t is ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16 or ScalarType.Float64;

    private static string Mb(long bytes) => bytes < 1_000_000 ? $"{bytes / 1e3:0.#} KB" : $"{bytes / 1e6:0.#} MB";
}
