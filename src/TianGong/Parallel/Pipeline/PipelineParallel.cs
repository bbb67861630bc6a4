using System.Diagnostics;
using System.Text;
using System.Text.Json;
using TianGong.Models;
using TianGong.Parallelism.Communication;
using TianGong.Training;
using TorchSharp.Modules;

namespace TianGong.Parallelism.Pipeline;

/// <summary>
/// Pipeline parallelism for one rank (Megatron-Core's pipeline_parallel): this rank's <see cref="PipelineStage"/> (or, with
/// virtual stages, its chunks: virtual stage k of pp·v on rank k mod pp), the schedule the config picked, and what the trainer needs around it: the step's loss on every stage, the tied
/// embedding's gradient summed between first and last stage, gradient clipping by the norm over all stages, and, before a
/// checkpoint, the other stages' weights (<see cref="GatherModel"/>) and optimizer state (<see cref="PipelineOptimizer"/>)
/// brought to stage 0, so rank 0 saves exactly what one process would. With one stage and no group it is the plain model
/// with recomputation.
/// </summary>
public sealed class PipelineParallel : IStepRunner<TokenBatch>, IDisposable
{
    private readonly CausalLM lm;
    private readonly ICommunicator? group;
    private readonly ICommunicator? embeddingGroup;
    private readonly PipelineChannel channel;
    private readonly PipelineSchedule<TokenBatch> schedule;
    private readonly PipelineForwardStep<TokenBatch> forwardStep;
    private readonly int microBatches;
    private readonly IReadOnlyList<PipelineStage> allStages; // every virtual stage's layout (weights are only computed on their own rank)
    private readonly PipelineStageModel? held; // this rank's stage of the model, the other stages' tensors freed
    private readonly bool gathers;
    private TimeSpan scheduleTime, scheduleWaiting;

    /// <param name="group">The pipeline group (rank = stage), or null for one stage.</param>
    /// <param name="ranges">Each virtual stage's layers (pp × virtual_stages of them), when already partitioned (before the other stages' weights were freed); null: partitioned here.</param>
    /// <param name="held">The model as this rank holds it, whose freed tensors stage 0 allocates again to receive the others' before a save.</param>
    /// <param name="gathers">
    /// Whether this pipeline brings its stages' weights and optimizer state to its stage 0 before a checkpoint: only the
    /// pipelines of data-parallel rank 0 (world rank 0's, which saves, and under tensor parallelism its tensor-parallel
    /// peers', whose shards rank 0 gathers next); the other replicas hold the same numbers.
    /// </param>
    public PipelineParallel(CausalLM lm, ICommunicator? group, ParallelConfig layout, PipelineForwardStep<TokenBatch> forwardStep,
        IReadOnlyList<(int From, int To)>? ranges = null, PipelineStageModel? held = null, bool gathers = true, StageEnds? ends = null)
    {
        this.lm = lm;
        this.group = group;
        this.forwardStep = forwardStep;
        this.held = held;
        this.gathers = gathers;
        microBatches = layout.MicroBatches;
        int stages = group?.Size ?? 1, rank = group?.Rank ?? 0;
        // With virtual stages (interleaving), virtual stage k of pp·v runs on rank k mod pp: each rank holds v chunks of layers.
        int virtualStages = group is null ? 1 : layout.VirtualStages, count = stages * virtualStages;
        schedule = PipelineSchedules.Get<TokenBatch>(layout.Schedule, virtualStages);
        var recompute = Models.Layers.Recomputation.Parse(layout.Recompute);
        ranges ??= PipelineStage.Partition(lm, count, layout.PpSplit);
        allStages = ranges.Select((r, k) => k % stages == rank ? new PipelineStage(lm, k, count, r, recompute, ends) : new PipelineStage(lm, k, count, r)).ToList();
        Chunks = allStages.Where(s => s.Index % stages == rank).ToList();
        Parameters = Chunks.SelectMany(c => c.Parameters).Distinct(ReferenceEqualityComparer.Instance).Cast<Parameter>().ToList();
        channel = new PipelineChannel(group);
        if (group is null) return;
        // Megatron's embedding group: the first and last stage, which both hold a tied embedding. With two stages it is the pipeline itself.
        embeddingGroup = stages == 2 ? group : group.Split(HoldsFirst || HoldsLast ? 0 : 1, rank);
    }

    /// <summary>This rank's chunks of layers (virtual stages), in order: one unless the layers are interleaved.</summary>
    public IReadOnlyList<PipelineStage> Chunks { get; }

    /// <summary>Ranks in the pipeline (1: the model as one stage, for recomputation).</summary>
    public int Ranks => group?.Size ?? 1;

    /// <summary>Whether this rank runs the first stage (the embeddings) and the last (final norm, head and loss).</summary>
    public bool HoldsFirst => Chunks[0].IsFirst;
    public bool HoldsLast => Chunks[^1].IsLast;

    /// <summary>The parameters this rank computes with and trains: those of its chunks.</summary>
    public IReadOnlyList<Parameter> Parameters { get; }

    /// <summary>Parameters the first and last stages share (a head tied to the token embedding); empty when untied.</summary>
    public IReadOnlyList<Parameter> TiedParameters => Chunks[0].TiedParameters;

    /// <summary>Which layers each stage runs, for the start-of-job message.</summary>
    public string Describe() =>
        $"pipeline: {allStages.Count} stage(s) on {Ranks} rank(s), schedule {schedule.Name}, {microBatches} micro-batch(es) per batch; layers " +
        string.Join(" | ", allStages.Select(s => $"stage {s.Index}" + (allStages.Count > Ranks ? $" (rank {s.Index % Ranks})" : "") + $": [{s.From}, {s.To})" +
                                                 (s.IsFirst ? " +embeddings" : "") + (s.IsLast ? " +norm/head" : "")));

    public double ForwardBackward(IReadOnlyList<TokenBatch> batches)
    {
        var micro = batches.SelectMany(Split).ToList();
        long start = Stopwatch.GetTimestamp();
        var waited = channel.Waiting;
        double sum = schedule.Run(Chunks, channel, micro, forwardStep);
        scheduleTime += Stopwatch.GetElapsedTime(start);
        scheduleWaiting += channel.Waiting - waited;
        return FromLastStage(sum / micro.Count);
    }

    public (double Loss, long Examples) Evaluate(TokenBatch batch)
    {
        var whole = new MicroBatch<TokenBatch>(batch, batch.Input, Chunks[0].ActivationShape(batch.Input.shape[0], batch.Input.shape[1]));
        double loss = PipelineSchedules.ForwardOnly(Chunks, channel, [whole], forwardStep);
        return (FromLastStage(loss), batch.Input.shape[0]);
    }

    /// <summary>Brings the other stages' weights to stage 0, unless the model's WholeState already does (<see cref="PipelineStageModel"/>: see <see cref="DistributedTraining.Context"/>).</summary>
    public void BeforeCheckpoint()
    {
        if (held is null) GatherModel();
    }

    /// <summary>How long this stage ran training schedules and how much of it it waited for a neighbour (the measured bubble and transfers).</summary>
    public string WaitReport() => group is null ? "" :
        $"stage {group.Rank}: {scheduleTime.TotalSeconds:F2} s in training schedules, {scheduleWaiting.TotalSeconds:F2} s of it waiting for a neighbour " +
        $"({(scheduleTime > TimeSpan.Zero ? scheduleWaiting / scheduleTime : 0):P1})";

    /// <summary>The rows of one batch in <see cref="microBatches"/> equal parts, in order: the same split on every stage.</summary>
    private IEnumerable<MicroBatch<TokenBatch>> Split(TokenBatch batch)
    {
        long rows = batch.Input.shape[0];
        if (rows % microBatches != 0)
            throw new TianGongException($"parallel.micro_batches {microBatches} must divide the {rows} rows of each batch (training.batch_size / dp)");
        long size = rows / microBatches;
        for (int i = 0; i < microBatches; i++)
        {
            var part = new TokenBatch(batch.Input.narrow(0, i * size, size), batch.Target.narrow(0, i * size, size));
            yield return new MicroBatch<TokenBatch>(part, part.Input, Chunks[0].ActivationShape(size, part.Input.shape[1]));
        }
    }

    /// <summary>The last stage's number on every stage.</summary>
    private double FromLastStage(double value)
    {
        if (group is null) return value;
        using var t = tensor(new[] { value }, ScalarType.Float64);
        group.Broadcast(t, root: group.Size - 1);
        return t.item<double>();
    }

    /// <summary>Sums the gradient of the tied embedding over the first and last stage (each computed its own part of it).</summary>
    public void AllReduceTiedGradients()
    {
        if (embeddingGroup is null || TiedParameters.Count == 0 || !(HoldsFirst || HoldsLast)) return;
        using var _ = no_grad();
        foreach (var p in TiedParameters)
        {
            if (p.grad is not { } g) continue;
            using var scope = NewDisposeScope(); // the fp32 and host copies on the way to flat
            var flat = g.to(ScalarType.Float32).cpu().contiguous();
            embeddingGroup.AllReduce(flat);
            g.copy_(flat.view_as(g));
        }
    }

    /// <summary>
    /// torch.nn.utils.clip_grad_norm_ over the whole model: each stage's sum of squares (a tied weight counted once, on the
    /// first stage), summed over the pipeline, then every stage scales its gradients by the same factor.
    /// </summary>
    public void ClipGradients(IReadOnlyList<Parameter> trained, double maxNorm) =>
        GlobalNormClipping.Clip(trained, maxNorm, HoldsFirst ? null : TiedParameters, group);

    /// <summary>
    /// Copies every stage's trained weights into stage 0's model object (stage 0 keeps what it trains itself), so that rank
    /// 0 holds the whole current model. Every rank of the pipeline calls it.
    /// </summary>
    public void GatherModel()
    {
        if (group is null || !gathers) return;
        using var _ = no_grad();
        if (HoldsFirst) held?.Materialise(); // the other stages' tensors, freed since the start, receive their weights
        int rank = group.Rank;
        var onRankZero = allStages.Where(s => s.Index % Ranks == 0).SelectMany(s => s.Parameters).ToHashSet(ReferenceEqualityComparer.Instance);
        foreach (var stage in allStages.Where(s => s.Index % Ranks != 0))
        {
            int owner = stage.Index % Ranks;
            foreach (var p in stage.Parameters.Where(p => !onRankZero.Contains(p)))
            {
                if (rank == owner)
                {
                    using var staged = p.detach().cpu().contiguous();
                    group.Send(staged, destination: 0, tag: 21);
                }
                else if (rank == 0)
                {
                    using var staged = empty(p.shape, p.dtype, CPU);
                    group.Receive(staged, source: owner, tag: 21);
                    p.copy_(staged);
                }
            }
        }
    }

    /// <summary>The optimizer of a stage: <paramref name="create"/> over this stage's parameters, its state gathered to stage 0 for checkpoints.</summary>
    public IOptimizer CreateOptimizer(IReadOnlyList<ParameterGroup> groups, Func<IReadOnlyList<ParameterGroup>, IOptimizer> create)
    {
        var mine = Parameters.ToHashSet(ReferenceEqualityComparer.Instance);
        var inner = create(groups.Select(g => g with { Parameters = g.Parameters.Where(p => mine.Contains(p.Param)).ToList() }).ToList());
        return group is null ? inner : new PipelineOptimizer(inner, group, gathers);
    }

    public void Dispose()
    {
        foreach (var s in allStages) s.Dispose();
        if (embeddingGroup is not null && !ReferenceEquals(embeddingGroup, group)) embeddingGroup.Dispose();
    }
}

/// <summary>
/// A stage's optimizer whose <see cref="StateDict"/> is the whole model's (a collective call over the pipeline): stage 0
/// receives every other stage's named state, so the checkpoint is keyed exactly as one process's and resumes on any
/// layout; loading takes each stage's own keys from the whole dictionary.
/// </summary>
/// <param name="gathers">False in the pipelines of data-parallel replicas other than rank 0's: they keep their own state.</param>
public sealed class PipelineOptimizer(IOptimizer inner, ICommunicator pipeline, bool gathers = true) : IOptimizer
{
    private const int Tag = 31;
    private readonly List<Tensor> received = []; // the other stages' state of the last StateDict, owned here until the next one

    public IEnumerable<Parameter> Parameters => inner.Parameters;
    public long StepCount => inner.StepCount;
    public void Step(double lr) => inner.Step(lr);
    public void ZeroGrad() => inner.ZeroGrad();
    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state, long stepCount, string source) => inner.LoadStateDict(state, stepCount, source);

    public Dictionary<string, Tensor> StateDict()
    {
        ReleaseReceived();
        var own = inner.StateDict(); // with ZeRO, a collective over the stage's data-parallel group first
        if (!gathers) return own;
        if (pipeline.Rank != 0)
        {
            SendState(own);
            return own;
        }
        var all = new Dictionary<string, Tensor>(own);
        for (int s = 1; s < pipeline.Size; s++)
            foreach (var (key, t) in ReceiveState(s))
            {
                received.Add(t);
                all.TryAdd(key, t); // a tied weight's state comes from both ends, the same: stage 0's copy is kept
            }
        return all;
    }

    /// <summary>A header (names, shapes, dtypes as JSON bytes, preceded by its length), then each tensor.</summary>
    private void SendState(Dictionary<string, Tensor> state)
    {
        var entries = state.OrderBy(e => e.Key, StringComparer.Ordinal).ToList();
        var header = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(entries.Select(e => new StateEntry(e.Key, e.Value.shape, e.Value.dtype.ToString())).ToList()));
        using (var length = tensor(new[] { (long)header.Length })) pipeline.Send(length, 0, Tag);
        using (var bytes = tensor(header)) pipeline.Send(bytes, 0, Tag);
        foreach (var (_, t) in entries)
        {
            using var staged = t.detach().cpu().contiguous();
            pipeline.Send(staged, 0, Tag);
        }
    }

    private IEnumerable<KeyValuePair<string, Tensor>> ReceiveState(int source)
    {
        using var length = zeros(1, ScalarType.Int64);
        pipeline.Receive(length, source, Tag);
        using var bytes = zeros(length.item<long>(), ScalarType.Byte);
        pipeline.Receive(bytes, source, Tag);
        var entries = JsonSerializer.Deserialize<List<StateEntry>>(bytes.data<byte>().ToArray())!;
        var tensors = new List<KeyValuePair<string, Tensor>>();
        foreach (var e in entries)
        {
            var t = empty(e.Shape, Enum.Parse<ScalarType>(e.DType), CPU);
            pipeline.Receive(t, source, Tag);
            tensors.Add(new(e.Name, t));
        }
        return tensors;
    }

    public void Dispose()
    {
        ReleaseReceived();
        inner.Dispose();
    }

    private void ReleaseReceived()
    {
        foreach (var t in received) t.Dispose();
        received.Clear();
    }

    private sealed record StateEntry(string Name, long[] Shape, string DType);
}
