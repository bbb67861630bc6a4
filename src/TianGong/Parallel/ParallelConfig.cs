using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using TianGong.Models;

namespace TianGong.Parallelism;

/// <summary>
/// How one training job is spread over processes: the config's <c>parallel</c> section, or
/// <c>--parallel dp=2,zero=1</c> on the command line (the same keys). The product dp × tp × pp is the number of
/// processes the job needs.
/// </summary>
/// <param name="Dp">Data-parallel ranks: each takes an equal slice of every global batch.</param>
/// <param name="Tp">Tensor-parallel ranks: attention heads, MLP channels and the vocabulary split over them (Parallel/Tensor).</param>
/// <param name="Pp">Pipeline stages: the decoder layers split into pp consecutive groups, one per rank of a pipeline (which holds only its stage's weights); combines with dp, ZeRO and tp.</param>
/// <param name="Zero">0: every rank holds the whole optimizer state; 1: optimizer state sharded over data-parallel ranks; 2: gradients reduce-scattered too.</param>
/// <param name="BucketMb">Gradients are all-reduced in buckets of about this many megabytes.</param>
/// <param name="TimeoutS">A collective that has not finished after this many seconds ends the job, naming the rank that waited.</param>
/// <param name="Recompute">none; selective: the attention core is recomputed in backward; full: each decoder layer is.</param>
/// <param name="MicroBatches">Pipeline micro-batches per batch (each of training.grad_accum batches is split along its rows into this many).</param>
/// <param name="Schedule">Pipeline schedule: 1f1b (default) or gpipe; with virtual_stages &gt; 1, interleaved 1F1B or breadth-first (GPipe's order over the chunks).</param>
/// <param name="PpSplit">Decoder layers per pipeline stage (e.g. [3, 3]; pp × virtual_stages counts); null: balanced by parameter count.</param>
/// <param name="VirtualStages">Chunks of layers per pipeline rank (interleaved stages: virtual stage k of pp × v runs on rank k mod pp).</param>
public sealed record ParallelConfig(
    int Dp = 1,
    int Tp = 1,
    int Pp = 1,
    int Zero = 0,
    string Recompute = "none",
    double BucketMb = 25,
    double TimeoutS = 300,
    int MicroBatches = 1,
    string Schedule = "1f1b",
    int[]? PpSplit = null,
    int VirtualStages = 1)
{
    public static ParallelConfig Single => new();

    [JsonIgnore]
    public int WorldSize => Dp * Tp * Pp;

    [JsonIgnore]
    public bool IsSingleProcess => WorldSize == 1;

    [JsonIgnore]
    public TimeSpan Timeout => TimeSpan.FromSeconds(TimeoutS);

    [JsonIgnore]
    public long BucketBytes => (long)(BucketMb * 1024 * 1024);

    public ParallelConfig Validate(string where)
    {
        ConfigChecks.InRange($"{where}.dp", Dp, 1, 1 << 20);
        ConfigChecks.InRange($"{where}.tp", Tp, 1, 1 << 10);
        ConfigChecks.InRange($"{where}.pp", Pp, 1, 1 << 10);
        ConfigChecks.InRange($"{where}.zero", Zero, 0, 2);
        ConfigChecks.OneOf($"{where}.recompute", Recompute, "none", "selective", "full");
        ConfigChecks.InRange($"{where}.bucket_mb", BucketMb, 0, 1 << 16, minInclusive: false);
        ConfigChecks.InRange($"{where}.timeout_s", TimeoutS, 0, 7 * 24 * 3600, minInclusive: false);
        // Only what is implemented is accepted: a layout TianGong cannot run is an error, not a silent single-process run.
        if (Zero > 0 && Dp == 1) throw new TianGongException($"{where}.zero: ZeRO shards over data-parallel ranks and needs dp > 1 (got zero={Zero}, dp=1)");

        // Pipeline stages (Parallel/Pipeline).
        ConfigChecks.InRange($"{where}.micro_batches", MicroBatches, 1, 1 << 16);
        ConfigChecks.OneOf($"{where}.schedule", Schedule, "1f1b", "gpipe");
        ConfigChecks.InRange($"{where}.virtual_stages", VirtualStages, 1, 1 << 10);
        if (VirtualStages > 1 && Pp == 1) throw new TianGongException($"{where}.virtual_stages: interleaved stages need pp > 1 (got virtual_stages={VirtualStages}, pp=1)");
        if (PpSplit is { } split && (split.Length != Pp * VirtualStages || split.Any(n => n < 1)))
            throw new TianGongException($"{where}.pp_split: expected {Pp * VirtualStages} layer counts of at least 1 (one per stage: pp × virtual_stages), got [{string.Join(", ", split)}]");
        if (Tp > 1 && Zero == 2) throw new TianGongException($"{where}.zero: zero=2 with tp > 1 is not supported (ZeRO-2 clips gradients it cannot tell split from whole); use zero=1");
        if (Tp > 1 && Recompute != "none") throw new TianGongException($"{where}.recompute: recomputation is not combined with tensor parallelism yet; use recompute=none with tp > 1");
        return this;
    }

    /// <summary>Reads a config's <c>parallel</c> section (absent: one process).</summary>
    public static ParallelConfig FromJson(JsonNode? node, string where) =>
        node is null ? Single : ConfigJson.Read<ParallelConfig>(node, where, strict: true).Validate(where);

    /// <summary>
    /// Parses <c>dp=2,tp=1,pp=1,zero=1,recompute=none,bucket_mb=25,timeout_s=300</c>; keys left out keep the values of
    /// <paramref name="baseConfig"/> (the config file's section).
    /// </summary>
    public static ParallelConfig Parse(string text, ParallelConfig? baseConfig = null)
    {
        const string where = "--parallel";
        var node = ConfigJson.ToNode(baseConfig ?? Single);
        string? previous = null;
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            // pp_split=3,3: the numbers after pp_split belong to it (commas also separate the keys).
            if (previous == "pp_split" && int.TryParse(part, NumberStyles.Integer, CultureInfo.InvariantCulture, out var more))
            {
                ((JsonArray)node["pp_split"]!).Add(more);
                continue;
            }
            var eq = part.IndexOf('=');
            if (eq <= 0) throw new TianGongException($"{where}: expected key=value pairs separated by commas (e.g. dp=2,zero=1), got '{part}'");
            var key = part[..eq].Trim().ToLowerInvariant();
            var value = part[(eq + 1)..].Trim();
            if (!node.ContainsKey(key) && key != "pp_split") // pp_split is left out of the node while null
                throw new TianGongException($"{where}: unknown key '{key}' (known: {string.Join(", ", node.Select(p => p.Key).Append("pp_split"))})");
            previous = key;
            if (key == "pp_split")
            {
                node[key] = new JsonArray(int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) ? n
                    : throw new TianGongException($"{where}: pp_split takes layer counts per stage (pp_split=3,3), got '{value}'"));
                continue;
            }
            node[key] = key is "recompute" or "schedule" ? JsonValue.Create(value)
                : double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var number)
                    ? (number == Math.Floor(number) && key is not ("bucket_mb" or "timeout_s") ? JsonValue.Create((long)number) : JsonValue.Create(number))
                    : throw new TianGongException($"{where}: {key} must be a number, got '{value}'");
        }
        return ConfigJson.Read<ParallelConfig>(node, where, strict: true).Validate(where);
    }

    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"dp={Dp},tp={Tp},pp={Pp},zero={Zero},recompute={Recompute},bucket_mb={BucketMb},timeout_s={TimeoutS}") +
        (Pp > 1 ? $",micro_batches={MicroBatches},schedule={Schedule}" + (VirtualStages > 1 ? $",virtual_stages={VirtualStages}" : "") +
                  (PpSplit is { } split ? $",pp_split={string.Join(",", split)}" : "") : "");
}
