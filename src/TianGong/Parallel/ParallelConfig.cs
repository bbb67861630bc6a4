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
/// <param name="Pp">Pipeline stages (not available yet: refused at validation).</param>
/// <param name="Zero">0: every rank holds the whole optimizer state; 1: optimizer state sharded over data-parallel ranks; 2: gradients reduce-scattered too.</param>
/// <param name="BucketMb">Gradients are all-reduced in buckets of about this many megabytes.</param>
/// <param name="TimeoutS">A collective that has not finished after this many seconds ends the job, naming the rank that waited.</param>
public sealed record ParallelConfig(
    int Dp = 1,
    int Tp = 1,
    int Pp = 1,
    int Zero = 0,
    string Recompute = "none",
    double BucketMb = 25,
    double TimeoutS = 300)
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
        if (Pp > 1) throw new TianGongException($"{where}.pp: pipeline parallelism is not available yet; use dp (and zero) for now");
        if (Recompute != "none") throw new TianGongException($"{where}.recompute: recomputation is not available yet; use \"none\"");
        if (Zero > 0 && Dp == 1) throw new TianGongException($"{where}.zero: ZeRO shards over data-parallel ranks and needs dp > 1 (got zero={Zero}, dp=1)");
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
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var eq = part.IndexOf('=');
            if (eq <= 0) throw new TianGongException($"{where}: expected key=value pairs separated by commas (e.g. dp=2,zero=1), got '{part}'");
            var key = part[..eq].Trim().ToLowerInvariant();
            var value = part[(eq + 1)..].Trim();
            if (!node.ContainsKey(key))
                throw new TianGongException($"{where}: unknown key '{key}' (known: {string.Join(", ", node.Select(p => p.Key))})");
            node[key] = key == "recompute" ? JsonValue.Create(value)
                : double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var number)
                    ? (number == Math.Floor(number) && key is not ("bucket_mb" or "timeout_s") ? JsonValue.Create((long)number) : JsonValue.Create(number))
                    : throw new TianGongException($"{where}: {key} must be a number, got '{value}'");
        }
        return ConfigJson.Read<ParallelConfig>(node, where, strict: true).Validate(where);
    }

    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"dp={Dp},tp={Tp},pp={Pp},zero={Zero},recompute={Recompute},bucket_mb={BucketMb},timeout_s={TimeoutS}");
}
