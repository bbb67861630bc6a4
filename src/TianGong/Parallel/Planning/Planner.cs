using System.Globalization;

namespace TianGong.Parallelism.Planning;

/// <param name="IntraNodeGBps">Per-device bandwidth inside a node (NVLink), in gigabytes per second, one direction.</param>
/// <param name="InterNodeGBps">Per-device bandwidth between nodes (InfiniBand), in gigabytes per second, one direction.</param>
public sealed record Cluster(int Devices, double MemoryGB, double PeakTflops, double IntraNodeGBps, double InterNodeGBps, int DevicesPerNode)
{
    public void Validate()
    {
        if (Devices < 1) throw new TianGongException($"--devices: must be at least 1, got {Devices}");
        if (DevicesPerNode < 1) throw new TianGongException($"--devices-per-node: must be at least 1, got {DevicesPerNode}");
        if (MemoryGB <= 0) throw new TianGongException($"--device-memory: must be positive, got {MemoryGB}");
        if (PeakTflops <= 0) throw new TianGongException($"--device-tflops: must be positive, got {PeakTflops}");
        if (IntraNodeGBps <= 0 || InterNodeGBps <= 0) throw new TianGongException("--intra-node-gbps and --inter-node-gbps: must be positive");
    }
}

/// <summary>One way to run a step: the parallel degrees, the micro-batch, virtual pipeline stages per device, ZeRO stage and recomputation.</summary>
public sealed record PlanLayout(int Dp, int Tp, int Pp, int MicroBatch, int Zero = 0, string Recompute = "none", int VirtualStages = 1)
{
    public override string ToString() => $"tp={Tp},pp={Pp},dp={Dp},micro_batch={MicroBatch},zero={Zero},recompute={Recompute}" + (VirtualStages > 1 ? $",virtual_stages={VirtualStages}" : "");

    /// <summary>Parses <c>tp=4,pp=12,dp=8,micro_batch=2,zero=1,recompute=full[,virtual_stages=2]</c>; dp may be left out (devices / (tp·pp)).</summary>
    public static PlanLayout Parse(string text, int devices)
    {
        var values = new Dictionary<string, string>();
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var kv = part.Split('=', 2, StringSplitOptions.TrimEntries);
            if (kv.Length != 2 || kv[0].Length == 0) throw new TianGongException($"--layout: expected key=value pairs, got '{part}'");
            values[kv[0].ToLowerInvariant()] = kv[1];
        }
        string[] known = ["dp", "tp", "pp", "micro_batch", "zero", "recompute", "virtual_stages"];
        foreach (var key in values.Keys)
            if (!known.Contains(key)) throw new TianGongException($"--layout: unknown key '{key}' (known: {string.Join(", ", known)})");
        int Int(string key, int fallback) => !values.TryGetValue(key, out var v) ? fallback
            : int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out var x) && x >= 0 ? x
            : throw new TianGongException($"--layout: {key} must be a whole number, got '{v}'");
        int tp = Int("tp", 1), pp = Int("pp", 1);
        if (tp < 1 || pp < 1) throw new TianGongException("--layout: tp and pp must be at least 1");
        int dp = Int("dp", devices / Math.Max(1, tp * pp));
        var recompute = values.GetValueOrDefault("recompute", "none");
        if (recompute is not ("none" or "selective" or "full")) throw new TianGongException($"--layout: recompute must be none, selective or full, got '{recompute}'");
        return new PlanLayout(dp, tp, pp, Int("micro_batch", 1), Int("zero", 0), recompute, Math.Max(1, Int("virtual_stages", 1)));
    }
}

/// <summary>What the planner predicts for one layout.</summary>
/// <param name="MemoryGB">Peak memory of the busiest device (the first pipeline stage): weights, gradients, optimizer state, activations, workspace.</param>
/// <param name="TflopsPerDevice">Model FLOP/s per device (no recomputation counted), as MFU counts.</param>
/// <param name="HwTflopsPerDevice">Hardware FLOP/s per device (recomputed forward passes counted), as HFU counts.</param>
public sealed record PlanEstimate(PlanLayout Layout, double MemoryGB, bool Fits, double StepSeconds, double TokensPerSecond,
    double TflopsPerDevice, double Mfu, double HwTflopsPerDevice, double Hfu, double BubbleFraction, double CommSeconds, string? Problem = null);

/// <summary>
/// An analytic model of a training step of a decoder under data, tensor and pipeline parallelism, ZeRO and recomputation,
/// and a search over layouts with it.
/// Memory: mixed-precision Adam as Megatron keeps it (bf16 weights 2 B, fp32 gradients 4 B, fp32 master and moments 12 B per
/// parameter; ZeRO-1 shards the 12 B, ZeRO-2 the gradients too); activations per layer after Korthikanti et al. 2022 (with
/// sequence parallelism when tp > 1): none sbh(34/t + 5as/(ht)), selective sbh·34/t, full 2sbh/t bytes; the first pipeline
/// stage holds min(m, p) micro-batches of its L/p layers in flight under 1F1B, × (1 + (p−1)/(pv)) with v virtual stages.
/// Time: FLOPs at <see cref="ComputeEfficiency"/> of peak; ring all-reduce 2(n−1)/n · bytes / bandwidth plus a latency per call
/// for tensor-parallel activations (4 per layer per micro-batch, 6 with full recomputation) and data-parallel gradients (not
/// overlapped); point-to-point activations between stages; the 1F1B bubble (p−1)/v micro-batch slots.
/// </summary>
public sealed class Planner(ModelShape model, Cluster cluster, int globalBatch, int seq)
{
    /// <summary>
    /// Fraction of peak that the matrix multiplications of a step reach on a GPU. Calibrated once on the 1T-parameter run of
    /// Narayanan et al. 2021 (3072 A100s, tp=8, pp=64, dp=6, batch 3072, full recomputation: 163 TFLOP/s per GPU published,
    /// 162.7 predicted); their GPT-3 175B figure (140 TFLOP/s on 1024 A100s) is the check (see docs/planner.md).
    /// </summary>
    public const double ComputeEfficiency = 0.62;

    private const double CollectiveLatencySeconds = 20e-6;
    private const double WorkspaceGB = 2.0; // CUDA context, allocator fragmentation, communication buffers

    public int GlobalBatch => globalBatch;
    public int Seq => seq;

    /// <summary>Model FLOPs of one token through forward and backward (no recomputation): 3 × (2 × linear weights + 4·s·h attention) per layer, plus the logits.</summary>
    public double ModelFlopsPerToken => 3.0 * (model.Layers * LayerForwardFlopsPerToken + 2.0 * model.Hidden * model.Vocab);

    private double LayerForwardFlopsPerToken => 2.0 * model.LayerLinearParams + 4.0 * seq * model.Hidden;

    /// <summary>Recomputed forward FLOPs per token: the whole layer (full) or the attention core QKᵀ and AV (selective).</summary>
    public double RecomputeFlopsPerToken(string recompute) => recompute switch
    {
        "full" => model.Layers * LayerForwardFlopsPerToken,
        "selective" => model.Layers * 4.0 * seq * model.Hidden,
        _ => 0,
    };

    /// <summary>Bytes of activations one layer keeps for backward, for one micro-batch, per device (Korthikanti et al. 2022, eqs. 2–4, with sequence parallelism).</summary>
    public double ActivationBytesPerLayer(PlanLayout l)
    {
        double sbh = (double)seq * l.MicroBatch * model.Hidden;
        double t = l.Tp;
        return l.Recompute switch
        {
            "full" => 2 * sbh / t,
            "selective" => sbh * 34 / t,
            _ => sbh * (34 / t + 5.0 * model.Heads * seq / (model.Hidden * t)),
        };
    }

    /// <summary>
    /// Layers on the busiest device: stages need not be equal (Llama 3 405B puts 126 layers on 16 stages), so the busiest
    /// holds ⌈L/(p·v)⌉ layers in each of its v virtual stages.
    /// </summary>
    public double StageLayers(PlanLayout l) => Math.Ceiling((double)model.Layers / (l.Pp * l.VirtualStages)) * l.VirtualStages;

    /// <summary>Parameters held by the first pipeline stage's device: its layers and the input embedding (and the head too when one stage holds all).</summary>
    public double ParametersPerDevice(PlanLayout l)
    {
        double stageLayers = StageLayers(l);
        double embeddings = model.EmbeddingParams * (l.Pp == 1 && !model.TiedEmbeddings ? 2 : 1);
        return (stageLayers * model.LayerParams + embeddings) / l.Tp;
    }

    /// <summary>Bytes of weights, gradients and optimizer state per parameter on one device for a ZeRO stage and dp ranks.</summary>
    public static double StateBytesPerParameter(int zero, int dp) => zero switch
    {
        0 => 2 + 4 + 12,
        1 => 2 + 4 + 12.0 / dp,
        _ => 2 + (4 + 12.0) / dp,
    };

    public PlanEstimate Evaluate(PlanLayout l)
    {
        string? problem = Check(l);
        int m = problem is null ? globalBatch / (l.Dp * l.MicroBatch) : 1;
        double gb = 1e9;

        // Memory of the first stage (the busiest: most micro-batches in flight).
        double parameters = ParametersPerDevice(l);
        double state = parameters * StateBytesPerParameter(l.Zero, l.Dp);
        double inFlight = Math.Min(m, l.Pp) * (l.VirtualStages > 1 ? 1 + (l.Pp - 1.0) / (l.Pp * l.VirtualStages) : 1);
        double activations = StageLayers(l) * inFlight * ActivationBytesPerLayer(l);
        double logits = l.Pp == 1 ? 6.0 * seq * l.MicroBatch * model.Vocab / l.Tp : 0; // bf16 logits and their fp32 copy for the loss, on the last stage
        double memoryGB = (state + activations + logits) / gb + WorkspaceGB;

        // Time of one micro-batch on one stage: compute, its tensor-parallel all-reduces, and the stage-to-stage transfers.
        double tokensPerMicro = (double)seq * l.MicroBatch;
        double hwFlopsPerToken = ModelFlopsPerToken + RecomputeFlopsPerToken(l.Recompute);
        // The busiest stage sets the pace: its layers' share of the layer FLOPs, and an even share of the logits.
        double layerFlopsPerToken = (ModelFlopsPerToken - 6.0 * model.Hidden * model.Vocab + RecomputeFlopsPerToken(l.Recompute)) / model.Layers;
        double stageFlopsPerToken = StageLayers(l) * layerFlopsPerToken + 6.0 * model.Hidden * model.Vocab / l.Pp;
        double compute = tokensPerMicro * stageFlopsPerToken / l.Tp / (cluster.PeakTflops * 1e12 * ComputeEfficiency);
        double activationBytes = tokensPerMicro * model.Hidden * 2; // bf16
        double tpCalls = (l.Recompute == "full" ? 6 : 4) * StageLayers(l);
        double tpComm = l.Tp == 1 ? 0 : tpCalls * AllReduceSeconds(activationBytes, l.Tp, Bandwidth(l.Tp));
        bool stagesCrossNodes = l.Tp * l.Dp >= cluster.DevicesPerNode;
        double p2p = l.Pp == 1 ? 0 : 2 * l.VirtualStages * (activationBytes / (l.Tp * 1e9 * (stagesCrossNodes ? cluster.InterNodeGBps : cluster.IntraNodeGBps)) + CollectiveLatencySeconds);
        double micro = compute + tpComm + p2p;
        double bubbleSlots = (l.Pp - 1.0) / l.VirtualStages;
        double pipeline = (m + bubbleSlots) * micro;

        // Data-parallel gradient sync after the pipeline flush: fp32 all-reduce, or reduce-scatter + bf16 all-gather with ZeRO.
        double dpBandwidth = Bandwidth(l.Tp * l.Dp);
        double dpComm = l.Dp == 1 ? 0 : l.Zero == 0
            ? AllReduceSeconds(parameters * 4, l.Dp, dpBandwidth)
            : (l.Dp - 1.0) / l.Dp * parameters * (4 + 2) / (dpBandwidth * 1e9) + 2 * CollectiveLatencySeconds;
        double step = pipeline + dpComm;

        double tokens = (double)globalBatch * seq;
        double modelTflops = ModelFlopsPerToken * tokens / step / cluster.Devices / 1e12;
        double hwTflops = hwFlopsPerToken * tokens / step / cluster.Devices / 1e12;
        return new PlanEstimate(l, memoryGB, problem is null && memoryGB <= cluster.MemoryGB, step, tokens / step,
            modelTflops, modelTflops / cluster.PeakTflops, hwTflops, hwTflops / cluster.PeakTflops,
            bubbleSlots / (m + bubbleSlots), (m + bubbleSlots) * (tpComm + p2p) + dpComm,
            problem ?? (memoryGB > cluster.MemoryGB ? $"needs {memoryGB:F1} GB per device, more than {cluster.MemoryGB:F0} GB" : null));
    }

    /// <summary>Why a layout cannot run at all (before memory), or null.</summary>
    public string? Check(PlanLayout l)
    {
        if (l.Dp < 1 || l.Tp < 1 || l.Pp < 1 || l.MicroBatch < 1) return "dp, tp, pp and micro_batch must be at least 1";
        if (model.Heads % l.Tp != 0) return $"tp={l.Tp} does not divide the {model.Heads} attention heads";
        if (l.Pp * l.VirtualStages > model.Layers) return $"pp·virtual_stages = {l.Pp * l.VirtualStages} stages, more than the {model.Layers} layers";
        if ((long)l.Dp * l.Tp * l.Pp != cluster.Devices) return $"dp·tp·pp = {(long)l.Dp * l.Tp * l.Pp}, not the {cluster.Devices} devices";
        if (globalBatch % (l.Dp * l.MicroBatch) != 0) return $"the global batch {globalBatch} is not a multiple of dp·micro_batch = {l.Dp * l.MicroBatch}";
        if (l.Zero is < 0 or > 2) return "zero must be 0, 1 or 2";
        if (l.Zero > 0 && l.Dp == 1) return "ZeRO needs dp > 1";
        if (l.VirtualStages > 1 && (l.Pp == 1 || globalBatch / (l.Dp * l.MicroBatch) % l.Pp != 0)) return "virtual stages need pp > 1 and a number of micro-batches divisible by pp";
        return null;
    }

    /// <summary>Every layout that runs and fits, fastest first.</summary>
    public IReadOnlyList<PlanEstimate> Search()
    {
        var results = new List<PlanEstimate>();
        foreach (int tp in Divisors(cluster.Devices).Where(t => t <= Math.Max(cluster.DevicesPerNode, 1) && model.Heads % t == 0))
            foreach (int pp in Divisors(cluster.Devices / tp).Where(p => p <= model.Layers))
            {
                int dp = cluster.Devices / (tp * pp);
                foreach (int mb in new[] { 1, 2, 4, 8, 16 })
                    foreach (int zero in dp == 1 ? [0] : new[] { 0, 1, 2 })
                        foreach (var recompute in new[] { "none", "selective", "full" })
                            foreach (int v in pp == 1 ? [1] : new[] { 1, 2, 4 })
                            {
                                var layout = new PlanLayout(dp, tp, pp, mb, zero, recompute, v);
                                if (Check(layout) is not null) continue;
                                var estimate = Evaluate(layout);
                                if (estimate.Fits) results.Add(estimate);
                            }
            }
        return results.OrderBy(e => e.StepSeconds).ThenBy(e => e.MemoryGB).ToList();
    }

    private double Bandwidth(int span) => span <= cluster.DevicesPerNode ? cluster.IntraNodeGBps : cluster.InterNodeGBps;

    private static double AllReduceSeconds(double bytes, int ranks, double gbPerSecond) =>
        2.0 * (ranks - 1) / ranks * bytes / (gbPerSecond * 1e9) + 2 * CollectiveLatencySeconds;

    private static IEnumerable<int> Divisors(int n) => Enumerable.Range(1, n).Where(d => n % d == 0);
}
