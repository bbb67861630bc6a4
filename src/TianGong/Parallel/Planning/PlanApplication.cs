using System.Text.Json.Nodes;

namespace TianGong.Parallelism.Planning;

/// <summary>
/// <c>tiangong plan --apply CONFIG</c>: a training config's model, batch and sequence as the planner's inputs, and the
/// chosen layout written back into its <c>parallel</c> section, so that <c>tiangong launch -n N -- pretrain --config CONFIG</c>
/// runs it as planned.
/// </summary>
public sealed class PlanApplication
{
    private readonly string path;
    private readonly JsonObject config;

    private PlanApplication(string path, JsonObject config)
    {
        this.path = path;
        this.config = config;
    }

    public static PlanApplication Open(string path)
    {
        if (!File.Exists(path)) throw new TianGongException($"--apply: config {path} not found");
        return ConfigJson.ReadFile(path) is JsonObject o ? new PlanApplication(path, o) : throw new TianGongException($"{path}: expected a JSON object");
    }

    /// <summary>The config's model section (with the tokenizer's vocab_size when the model leaves it out).</summary>
    public ModelShape Model()
    {
        if (config["model"] is not JsonObject model) throw new TianGongException($"{path}: has no model section to plan for; pass --model");
        var shape = (JsonObject)model.DeepClone();
        if (shape["vocab_size"] is null && config["tokenizer"]?["vocab_size"] is { } vocab) shape["vocab_size"] = vocab.DeepClone();
        return ModelShape.FromConfigJson(shape, path) with { Name = Path.GetFileNameWithoutExtension(path) };
    }

    private int Training(string field, int fallback) => config["training"]?[field] is JsonValue v && v.TryGetValue<int>(out var x) ? x : fallback;

    /// <summary>Sequences per optimizer step: training.batch_size × grad_accum.</summary>
    public int? GlobalBatch => config["training"]?["batch_size"] is null ? null : Training("batch_size", 1) * Training("grad_accum", 1);

    public int? Seq => config["training"]?["seq_len"] is null ? null : Training("seq_len", 1);

    /// <summary>The parallel section that runs <paramref name="layout"/>, or null when TianGong cannot run that layout (with the reason).</summary>
    public (ParallelConfig? Config, string? Problem) ToParallelConfig(PlanLayout layout, int globalBatch)
    {
        // The planner's micro-batch is rows; the trainer splits each of grad_accum batches (batch_size / dp rows) into micro_batches.
        int rowsPerRank = globalBatch / Training("grad_accum", 1) / layout.Dp;
        if (rowsPerRank < layout.MicroBatch || rowsPerRank % layout.MicroBatch != 0)
            return (null, $"micro_batch {layout.MicroBatch} does not divide the {rowsPerRank} rows of a batch on each data-parallel rank");
        int microBatches = layout.Pp > 1 ? rowsPerRank / layout.MicroBatch : 1;
        if (layout.VirtualStages > 1 && Training("grad_accum", 1) * microBatches % layout.Pp != 0)
            return (null, $"interleaved 1F1B needs the micro-batches of a step ({Training("grad_accum", 1) * microBatches}) to be a multiple of pp={layout.Pp}");
        var existing = ParallelConfig.FromJson(config["parallel"], $"{path}: parallel");
        var candidate = existing with
        {
            Dp = layout.Dp, Tp = layout.Tp, Pp = layout.Pp, Zero = layout.Zero, Recompute = layout.Recompute,
            MicroBatches = microBatches,
            PpSplit = null,
            VirtualStages = layout.VirtualStages,
            Schedule = layout.VirtualStages > 1 ? "1f1b" : existing.Schedule, // the planner models interleaved 1F1B
        };
        try
        {
            return (candidate.Validate("parallel"), null);
        }
        catch (TianGongException e)
        {
            return (null, e.Message);
        }
    }

    /// <summary>Writes <paramref name="layout"/> as the config's parallel section (the other sections untouched), atomically.</summary>
    public void Write(ParallelConfig layout)
    {
        config["parallel"] = ConfigJson.ToNode(layout);
        ConfigJson.WriteAtomically(path, config.ToJsonString(ConfigJson.Options));
    }
}
