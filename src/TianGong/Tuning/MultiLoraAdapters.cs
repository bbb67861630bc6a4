using TianGong.Checkpoints;
using TianGong.Models.Layers;
using TorchSharp.Modules;

namespace TianGong.Tuning;

/// <summary>A LoRA adapter folder served under a name of its own (<c>serve --adapter NAME=DIR</c>).</summary>
public sealed record NamedAdapter(string Name, string Directory)
{
    /// <summary>
    /// <c>NAME=DIR</c>, or null when <paramref name="text"/> is a bare folder (no '=', or a '/' before it). Names are what
    /// clients send as "model", so they are kept to letters, digits and <c>._:-</c>.
    /// </summary>
    public static NamedAdapter? Parse(string text)
    {
        int at = text.IndexOf('=');
        if (at < 0 || text[..at].Contains('/') || text[..at].Contains(Path.DirectorySeparatorChar)) return null;
        var (name, dir) = (text[..at].Trim(), text[(at + 1)..].Trim());
        if (name.Length == 0 || dir.Length == 0)
            throw new TianGongException($"--adapter: '{text}' must be NAME=DIR with both parts given");
        if (!name.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-' or ':'))
            throw new TianGongException($"--adapter: adapter name '{name}' may hold only letters, digits and . _ - :");
        return new NamedAdapter(name, dir);
    }
}

/// <summary>How a batch that mixes adapters computes their updates.</summary>
public enum MultiLoraStrategy
{
    /// <summary>Stacked while the adapters' ranks add up to at most <see cref="MultiLoraAdapters.StackedRankLimit"/>, else grouped.</summary>
    Auto,

    /// <summary>
    /// Per group of rows sharing an adapter: gather its rows, two matmuls, scatter-add back (S-LoRA / Punica's SGMV
    /// semantics). Work grows with the rows, but each adapter in the batch costs a few more tensor operations per layer.
    /// </summary>
    Grouped,

    /// <summary>
    /// Every adapter's A side by side: x·[A₁ᵀ … Aₙᵀ], times a per-row mask that keeps only the row's own adapter's
    /// columns, then ·[B₁ᵀ; …; Bₙᵀ]. Four operations per layer however many adapters the batch mixes, at the price of
    /// computing every adapter's rank for every row: cheap while the ranks add up to little.
    /// </summary>
    Stacked,
}

/// <summary>
/// Several LoRA adapters (PEFT folders) over one base model, served in one batch as S-LoRA and vLLM's multi-LoRA do.
/// <see cref="Load"/> swaps every linear layer that some adapter targets for a <see cref="MultiLoraLinear"/> (through
/// <see cref="LayerReplacement"/>, so no family file changes); the engine then says, before each forward pass, which
/// adapter each batch row uses (<see cref="Route"/>). That routing lives here, in one object the engine owns, and holds
/// only the pass in flight: outside a route every layer computes the base model.
/// </summary>
public sealed class MultiLoraAdapters
{
    private const string PeftPrefix = "base_model.model.";
    private readonly Dictionary<string, int> indexByName;
    private readonly Device device;
    private readonly ScalarType dtype;

    /// <summary>Auto stacks the adapters while their ranks add up to at most this (the extra matmul width per row).</summary>
    public const int StackedRankLimit = 64;

    private MultiLoraAdapters(IReadOnlyList<string> names, IReadOnlyList<int> ranks, bool stacked, Device device, ScalarType dtype)
    {
        Names = names;
        Stacked = stacked;
        RankOffsets = [.. ranks.Select((_, i) => ranks.Take(i).Sum())];
        TotalRank = ranks.Sum();
        Ranks = ranks;
        this.dtype = dtype;
        indexByName = names.Select((n, i) => (n, i)).ToDictionary(p => p.n, p => p.i, StringComparer.Ordinal);
        this.device = device;
    }

    /// <summary>The adapters' names, in the order given; a row's adapter index is its position here (−1: the base model).</summary>
    public IReadOnlyList<string> Names { get; }

    /// <summary>The module names of the layers some adapter changes.</summary>
    public IReadOnlyList<string> Layers { get; private set; } = [];

    /// <summary>Rows of the pass in flight, grouped by adapter (base rows belong to no group); empty outside a route.</summary>
    internal IReadOnlyList<RowGroup> Groups { get; private set; } = [];

    /// <summary>Rows of the pass in flight.</summary>
    internal int RowCount { get; private set; }

    /// <summary>
    /// When the pass in flight mixes adapters (or adapters and the base) and the strategy is stacked: (B, 1, ΣR), 1 on
    /// the columns of each row's own adapter, 0 elsewhere (all 0 for a base row). Null otherwise.
    /// </summary>
    internal Tensor? Mask { get; private set; }

    /// <summary>Whether mixed batches take the stacked path (<see cref="MultiLoraStrategy.Stacked"/>).</summary>
    public bool Stacked { get; }

    internal IReadOnlyList<int> Ranks { get; }

    /// <summary>Where each adapter's columns start in the stacked layout.</summary>
    internal IReadOnlyList<int> RankOffsets { get; }

    internal int TotalRank { get; }

    public bool Contains(string name) => indexByName.ContainsKey(name);

    /// <summary>The index of adapter <paramref name="name"/>; null stands for the base model (−1).</summary>
    public int IndexOf(string? name) => name is null ? -1 : indexByName.TryGetValue(name, out int i) ? i
        : throw new TianGongException($"model: no adapter named '{name}' (adapters: {string.Join(", ", Names)})");

    /// <summary>
    /// Sets the adapter of each row of the next forward pass (a name, or null for the base model) until the returned
    /// scope is disposed. Rows sharing an adapter form one group, so each adapter's update is one pair of matmuls.
    /// </summary>
    public IDisposable Route(IReadOnlyList<string?> rowAdapters)
    {
        if (RowCount > 0) throw new InvalidOperationException("a forward pass is already routed");
        var indices = rowAdapters.Select(IndexOf).ToArray();
        var groups = new List<RowGroup>();
        foreach (int adapter in indices.Where(i => i >= 0).Distinct())
        {
            var rows = Enumerable.Range(0, indices.Length).Where(r => indices[r] == adapter).Select(r => (long)r).ToArray();
            groups.Add(new RowGroup(adapter, rows.Length == indices.Length ? null : tensor(rows, device: device).DetachFromDisposeScope()));
        }
        bool mixed = groups.Count > 1 || groups.Count == 1 && groups[0].Rows is not null;
        if (Stacked && mixed)
        {
            var mask = new float[indices.Length * TotalRank];
            for (int r = 0; r < indices.Length; r++)
                if (indices[r] >= 0) Array.Fill(mask, 1f, r * TotalRank + RankOffsets[indices[r]], Ranks[indices[r]]);
            Mask = tensor(mask, [indices.Length, 1, TotalRank], dtype, device).DetachFromDisposeScope();
        }
        (Groups, RowCount) = (groups, indices.Length);
        return new RouteScope(this);
    }

    /// <summary>
    /// Reads each adapter folder and wraps the layers any of them targets in <paramref name="model"/>. Every adapter must
    /// fit the base: its target modules must name linear layers of it, and each A (r, in) and B (out, r) must match that
    /// layer's shape; otherwise the error names the adapter and the base (<paramref name="baseName"/>).
    /// </summary>
    public static MultiLoraAdapters Load(nn.Module model, IReadOnlyList<NamedAdapter> adapters, string baseName,
        MultiLoraStrategy strategy = MultiLoraStrategy.Auto)
    {
        if (adapters.Count == 0) throw new TianGongException("no adapters to load");
        foreach (var duplicate in adapters.GroupBy(a => a.Name).Where(g => g.Count() > 1))
            throw new TianGongException($"--adapter: the name '{duplicate.Key}' is given {duplicate.Count()} times");
        if (adapters.FirstOrDefault(a => a.Name == baseName) is { } clash)
            throw new TianGongException($"--adapter: the name '{clash.Name}' is the base model's own name; choose another");
        var linear = LayerReplacement.LinearLayerNames(model);
        var modules = model.named_modules().ToDictionary(m => m.name, m => m.module);
        var perLayer = new Dictionary<string, (Tensor A, Tensor B, double Scaling)?[]>(StringComparer.Ordinal);
        var read = new List<Tensor>();
        var ranks = new int[adapters.Count];
        try
        {
            for (int index = 0; index < adapters.Count; index++)
                foreach (var (layer, a, b, scaling) in ReadOne(adapters[index], baseName, linear, modules))
                {
                    ranks[index] = (int)a.shape[0];
                    read.Add(a);
                    read.Add(b);
                    if (!perLayer.TryGetValue(layer, out var slots)) perLayer[layer] = slots = new (Tensor, Tensor, double)?[adapters.Count];
                    slots[index] = (a, b, scaling);
                }
            bool stacked = strategy == MultiLoraStrategy.Stacked || strategy == MultiLoraStrategy.Auto && ranks.Sum() <= StackedRankLimit;
            var first = model.parameters().First();
            var set = new MultiLoraAdapters([.. adapters.Select(a => a.Name)], ranks, stacked, first.device, first.dtype);
            set.Layers = LayerReplacement.Replace(model, LayerSelector.Exactly(linear.Where(perLayer.ContainsKey)),
                (name, parts) => new MultiLoraLinear(name, parts, set, perLayer[name]));
            return set;
        }
        finally
        {
            foreach (var t in read) t.Dispose(); // the layers keep transposed copies
        }
    }

    /// <summary>One adapter's A, B and scaling per layer, checked against the base.</summary>
    private static List<(string Layer, Tensor A, Tensor B, double Scaling)> ReadOne(NamedAdapter adapter, string baseName,
        IReadOnlyList<string> linear, IReadOnlyDictionary<string, nn.Module> modules)
    {
        string who = $"adapter '{adapter.Name}' ({adapter.Directory})";
        string misfit = $"{who} does not fit the base model '{baseName}'";
        if (!Directory.Exists(adapter.Directory)) throw new TianGongException($"{who}: folder not found");
        LoraConfig config;
        try { config = LoraConfig.Read(Path.Combine(adapter.Directory, LoraConfig.FileName)); }
        catch (TianGongException e) { throw new TianGongException($"{who}: {e.Message}"); }
        var weightsPath = Path.Combine(adapter.Directory, LoraAdapter.WeightsFile);
        if (!File.Exists(weightsPath)) throw new TianGongException($"{who}: no {LoraAdapter.WeightsFile}");

        var targets = linear.Where(config.TargetModules.Matches).ToHashSet(StringComparer.Ordinal);
        if (targets.Count == 0)
            throw new TianGongException($"{misfit}: its target modules '{config.TargetModules}' match none of the base's linear layers ({Summarize(linear)})");
        foreach (var name in targets)
            if (modules[name] is not (Linear or Conv1D or DecodeLinear))
                throw new TianGongException($"{who}: the base's layer {name} is already a {modules[name].GetType().Name}; named adapters go on a plain base model");

        double scaling = config.UseRsLora ? config.LoraAlpha / Math.Sqrt(config.R) : config.LoraAlpha / config.R;
        var a = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var b = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var unexpected = new List<string>();
        try
        {
            using var file = SafeTensorsFile.Open(weightsPath);
            foreach (var key in file.Keys)
            {
                var name = key.StartsWith(PeftPrefix, StringComparison.Ordinal) ? key[PeftPrefix.Length..] : key;
                bool isA = name.EndsWith(".lora_A.weight", StringComparison.Ordinal);
                if (!isA && !name.EndsWith(".lora_B.weight", StringComparison.Ordinal)) { unexpected.Add(key); continue; }
                var layer = name[..^".lora_A.weight".Length];
                if (!targets.Contains(layer)) { unexpected.Add(key); continue; }
                var parts = LinearLayers.Describe(modules[layer])!;
                long[] want = isA ? [config.R, parts.InFeatures] : [parts.OutFeatures, config.R];
                var shape = file.GetInfo(key).Shape;
                if (!shape.SequenceEqual(want))
                    throw new TianGongException($"{misfit}: '{key}' has shape [{string.Join(", ", shape)}] but the base's {layer} needs [{string.Join(", ", want)}] (r = {config.R})");
                using var value = file.Read(key);
                (isA ? a : b)[layer] = value.to(parts.Weight.dtype, parts.Weight.device);
            }
            var missing = targets.Where(t => !a.ContainsKey(t) || !b.ContainsKey(t)).Order(StringComparer.Ordinal).ToList();
            if (missing.Count > 0 || unexpected.Count > 0)
                throw new TianGongException(misfit
                    + (missing.Count > 0 ? $"; no A and B for: {Summarize(missing)}" : "")
                    + (unexpected.Count > 0 ? $"; tensors for no layer it targets: {Summarize(unexpected)}" : ""));
        }
        catch
        {
            foreach (var t in a.Values.Concat(b.Values)) t.Dispose();
            throw;
        }
        return [.. targets.Select(t => (t, a[t], b[t], scaling))];
    }

    private static string Summarize(IReadOnlyList<string> names) =>
        names.Count <= 12 ? string.Join(", ", names) : string.Join(", ", names.Take(12)) + $" (+{names.Count - 12} more)";

    /// <summary>A group of rows that use one adapter; Rows null when every row of the pass does (no gather needed).</summary>
    internal sealed record RowGroup(int Adapter, Tensor? Rows);

    private sealed class RouteScope(MultiLoraAdapters owner) : IDisposable
    {
        private bool disposed;

        public void Dispose()
        {
            if (disposed) return;
            disposed = true;
            foreach (var group in owner.Groups) group.Rows?.Dispose();
            owner.Mask?.Dispose();
            (owner.Groups, owner.RowCount, owner.Mask) = ([], 0, null);
        }
    }
}
