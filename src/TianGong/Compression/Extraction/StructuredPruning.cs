using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace TianGong.Compression.Extraction;

/// <summary>
/// What width pruning needs to know of a family: its head and MLP sizes (read from config.json), which projections
/// carry the importance gates, and which tensors are sliced along which dimension.
/// </summary>
public sealed record PrunableShape(string ModelType, int Layers, int Heads, int KvHeads, int HeadDim, int Intermediate)
{
    private static readonly string[] LlamaLike = ["llama", "mistral", "qwen2"];

    public int GroupSize => Heads / KvHeads;

    /// <summary>GPT-2's config has no head_dim (it is n_embd / n_head), so fewer heads cannot be written down.</summary>
    public bool HeadsPrunable => ModelType != "gpt2";

    internal string GatedProjections => ModelType == "gpt2"
        ? @".*\.h\.\d+\.(attn|mlp)\.c_proj"
        : @".*\.layers\.\d+\.(self_attn\.o_proj|mlp\.down_proj)";

    internal bool IsHeadGate(string name) => name.EndsWith(ModelType == "gpt2" ? ".attn.c_proj" : ".o_proj", StringComparison.Ordinal);

    public static PrunableShape Of(JsonNode config, string where)
    {
        var type = (string?)config["model_type"] ?? "";
        int Required(string field) => (int?)config[field] ?? throw new TianGongException($"{where}: {field} missing");
        if (type == "gpt2")
        {
            int width = Required("n_embd"), heads = Required("n_head");
            return new PrunableShape(type, Required("n_layer"), heads, heads, width / heads, (int?)config["n_inner"] ?? 4 * width);
        }
        if (LlamaLike.Contains(type))
        {
            int heads = Required("num_attention_heads");
            return new PrunableShape(type, Required("num_hidden_layers"), heads, (int?)config["num_key_value_heads"] ?? heads,
                (int?)config["head_dim"] ?? Required("hidden_size") / heads, Required("intermediate_size"));
        }
        throw new TianGongException($"{where}: head and MLP pruning covers llama, mistral, qwen2 and gpt2 (MLP only); model_type '{type}' is not one of them");
    }
}

/// <summary>
/// The units every layer keeps, chosen from importance scores, and the slicing and config changes that follow.
/// Counts are the same in every layer (transformers builds every layer from one num_attention_heads and
/// intermediate_size); which heads and channels are kept differs per layer.
/// </summary>
/// <remarks>
/// Grouped-query attention: with G = heads / kv_heads query heads per key/value head, pruning keeps every key/value
/// head and round(F·G) query heads in every group, the most important of each group, so the grouping stays valid
/// (heads' = kv_heads · round(F·G)). Key/value heads are small (kv_heads·D columns), and dropping a whole group would
/// drop its query heads however important they are. With G = 1 (multi-head attention) a head is its own group, and
/// round(F·H) heads are kept with their keys and values.
/// </remarks>
public sealed partial class StructuredPruning
{
    private readonly PrunableShape shape;
    private readonly int[][] keptHeads;      // per layer, ascending: query heads kept
    private readonly int[][] keptKvHeads;    // per layer, ascending: key/value heads kept
    private readonly int[][] keptChannels;   // per layer, ascending: MLP channels kept

    public int HeadsKept => keptHeads[0].Length;
    public int KvHeadsKept => keptKvHeads[0].Length;
    public int ChannelsKept => keptChannels[0].Length;
    public IReadOnlyList<int> KeptHeads(int layer) => keptHeads[layer];
    public IReadOnlyList<int> KeptChannels(int layer) => keptChannels[layer];

    private StructuredPruning(PrunableShape shape, int[][] heads, int[][] kvHeads, int[][] channels) =>
        (this.shape, keptHeads, keptKvHeads, keptChannels) = (shape, heads, kvHeads, channels);

    /// <summary>
    /// How many query heads, key/value heads and MLP channels every layer keeps; a fraction that would keep no head
    /// (of a layer, or of a key/value group) or no channel is an error. Cheap: run it before measuring importance.
    /// </summary>
    public static (int Heads, int KvHeads, int Channels) Counts(PrunableShape shape, PruningOptions options)
    {
        options.Validate();
        var (heads, kvHeads, channels) = (shape.Heads, shape.KvHeads, shape.Intermediate);
        if (options.HeadsKeep is { } fh)
        {
            if (!shape.HeadsPrunable)
                throw new TianGongException($"--heads-keep: {shape.ModelType}'s config.json cannot describe fewer heads (its head size is n_embd / n_head, and transformers has no head_dim for it); prune its MLP with --mlp-keep");
            int g = shape.GroupSize;
            if (g == 1)
            {
                heads = kvHeads = PruningOptions.Keep(fh, shape.Heads);
                if (heads == 0) throw new TianGongException($"--heads-keep {fh}: would remove every attention head ({shape.Heads} per layer; keep at least 1/{shape.Heads})");
            }
            else
            {
                int perGroup = PruningOptions.Keep(fh, g);
                if (perGroup == 0)
                    throw new TianGongException($"--heads-keep {fh}: would remove every query head of a key/value group ({g} query heads share each of the {shape.KvHeads} key/value heads; keep at least 1/{g} so that every group keeps one)");
                heads = perGroup * shape.KvHeads;
            }
        }
        if (options.MlpKeep is { } fm)
        {
            channels = PruningOptions.Keep(fm, shape.Intermediate);
            if (channels == 0) throw new TianGongException($"--mlp-keep {fm}: would remove every MLP channel ({shape.Intermediate} per layer)");
        }
        return (heads, kvHeads, channels);
    }

    /// <summary>Chooses what every layer keeps (<see cref="Counts"/> of them), the highest-scoring units of each layer.</summary>
    public static StructuredPruning Plan(PrunableShape shape, IReadOnlyList<LayerImportance> scores, PruningOptions options)
    {
        var (headCount, kvCount, channelCount) = Counts(shape, options);
        var all = Enumerable.Range(0, shape.Layers).ToArray();
        int g = shape.GroupSize;
        int[][] heads, kvHeads;
        if (g == 1)
        {
            heads = all.Select(l => Top(scores[l].Heads, Enumerable.Range(0, shape.Heads), headCount)).ToArray();
            kvHeads = heads;
        }
        else
        {
            int perGroup = headCount / shape.KvHeads;
            heads = all.Select(l => Enumerable.Range(0, shape.KvHeads)
                .SelectMany(group => Top(scores[l].Heads, Enumerable.Range(group * g, g), perGroup)).ToArray()).ToArray();
            kvHeads = all.Select(_ => Enumerable.Range(0, kvCount).ToArray()).ToArray();
        }
        int[][] channels = all.Select(l => Top(scores[l].Channels, Enumerable.Range(0, shape.Intermediate), channelCount)).ToArray();
        return new StructuredPruning(shape, heads, kvHeads, channels);
    }

    /// <summary>The <paramref name="count"/> highest-scoring of <paramref name="candidates"/>, in ascending index order (ties: the lower index).</summary>
    private static int[] Top(double[] scores, IEnumerable<int> candidates, int count) =>
        candidates.OrderByDescending(i => scores[i]).ThenBy(i => i).Take(count).Order().ToArray();

    [GeneratedRegex(@"^(?:self_attn\.(?<proj>q_proj|k_proj|v_proj|o_proj)|mlp\.(?<proj>gate_proj|up_proj|down_proj|c_fc|c_proj))\.(?<kind>weight|bias)$")]
    private static partial Regex PrunedTensor();

    /// <summary>
    /// The tensor <paramref name="tail"/> (the key after <c>layers.N.</c>) of source layer <paramref name="layer"/>,
    /// with the pruned rows or columns removed; tensors pruning does not touch come back as they are.
    /// </summary>
    public Tensor Slice(int layer, string tail, Tensor value)
    {
        var m = PrunedTensor().Match(tail);
        if (!m.Success) return value;
        bool weight = m.Groups["kind"].Value == "weight";
        int d = shape.HeadDim;
        var (units, dim) = m.Groups["proj"].Value switch
        {
            "q_proj" => (Expand(keptHeads[layer], d), 0L),
            "k_proj" or "v_proj" => (Expand(keptKvHeads[layer], d), 0L),
            "o_proj" when weight => (Expand(keptHeads[layer], d), 1L),
            "gate_proj" or "up_proj" => (keptChannels[layer], 0L),
            "down_proj" when weight => (keptChannels[layer], 1L),
            "c_fc" => (keptChannels[layer], weight ? 1L : 0L),          // Conv1D weight (in, out): outputs are columns
            "c_proj" when weight && shape.ModelType == "gpt2" => (keptChannels[layer], 0L), // mlp.c_proj (in = I, out)
            _ => (null, 0L),                                               // o_proj / down_proj / c_proj bias: output side, unchanged
        };
        if (units is null || units.Length == value.shape[dim]) return value;
        using var index = tensor(units.Select(i => (long)i).ToArray(), device: value.device);
        return value.index_select(dim, index);
    }

    private static int[] Expand(int[] heads, int headDim) => heads.SelectMany(h => Enumerable.Range(h * headDim, headDim)).ToArray();

    /// <summary>The config.json fields pruning changes, set on <paramref name="config"/>.</summary>
    public void UpdateConfig(JsonNode config)
    {
        if (shape.ModelType == "gpt2")
        {
            config["n_inner"] = ChannelsKept;
            return;
        }
        config["num_attention_heads"] = HeadsKept;
        config["num_key_value_heads"] = KvHeadsKept;
        config["head_dim"] = shape.HeadDim; // hidden_size / heads no longer gives it
        config["intermediate_size"] = ChannelsKept;
    }
}
