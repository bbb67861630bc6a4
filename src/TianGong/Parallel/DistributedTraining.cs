using TianGong.Models;
using TianGong.Parallelism.Communication;
using TianGong.Parallelism.TensorParallel;
using TianGong.Training;

namespace TianGong.Parallelism;

/// <summary>
/// What a training run needs to know about the job it is part of: one process (nothing to do), or one rank of an
/// MPI job laid out by a <see cref="ParallelConfig"/>. It starts MPI, builds the process groups, gives the trainer its
/// <see cref="ParallelContext"/> (gradient sync, loss averaging, which rank writes) and ends MPI when disposed.
/// </summary>
public sealed class DistributedTraining : IDisposable
{
    private readonly ProcessGroups? groups;
    private readonly DataParallel? dataParallel;
    private Pipeline.PipelineParallel? pipeline;

    private readonly Action<string>? status;
    private TensorParallelCausalLM? tensorParallel; // set by ShardModel when tp > 1
    private Pipeline.PipelineStageModel? stageModel; // set by ShardModel when pp > 1: this rank's stage, the others' weights freed
    private IReadOnlyList<(int From, int To)>? stageRanges; // the layers of each stage, partitioned while every weight was there
    private long? modelBytes; // the whole model's parameters, before ShardModel split or freed any

    private DistributedTraining(ParallelConfig layout, ProcessGroups? groups, Action<string>? status = null)
    {
        this.status = status;
        Layout = layout;
        this.groups = groups;
        if (groups is not null) dataParallel = new DataParallel(groups.DataParallel, layout.BucketBytes);
    }

    public ParallelConfig Layout { get; }

    /// <summary>Where this rank trains: the requested device, with a bare <c>cuda</c> made this rank's own GPU in a job.</summary>
    public Device Device { get; private init; } = CPU;

    public int WorldRank => groups?.World.Rank ?? 0;

    /// <summary>Only rank 0 writes the run folder: metrics, plots, checkpoints, the model folder.</summary>
    public bool IsWriter => WorldRank == 0;

    public ProcessGroups? Groups => groups;

    /// <summary>
    /// Joins the MPI job when this process is one of its ranks, otherwise runs alone. A layout of several processes
    /// outside a job, or a job whose size differs from the layout, is an error that says how to launch it.
    /// </summary>
    public static DistributedTraining Start(ParallelConfig layout, Action<string>? status = null, Device? device = null)
    {
        bool inJob = MpiCommunicator.LaunchedByMpi;
        if (!inJob)
        {
            if (!layout.IsSingleProcess)
                throw new TianGongException($"--parallel {layout} needs {layout.WorldSize} processes; start it with: tiangong launch -n {layout.WorldSize} -- <command> ...");
            return new DistributedTraining(layout, null) { Device = device ?? CPU };
        }
        // One GPU per local rank; GPUs exchange tensors through NCCL, CPUs through MPI (NcclCommunicator.ForDevice).
        var rankDevice = CudaDevices.RankDevice(device ?? CPU, CudaDevices.LocalRank(), CudaDevices.LocalSize());
        var mpiWorld = MpiCommunicator.InitWorld(layout.Timeout);
        ICommunicator world = mpiWorld;
        try
        {
            world = NcclCommunicator.ForDevice(mpiWorld, rankDevice, layout.Timeout); // owns mpiWorld from here
            var groups = ProcessGroups.Create(world, layout);
            if (world.Rank == 0) status?.Invoke(ProcessGroups.Describe(layout) + (world is NcclCommunicator nccl ? $"\n  communication     {nccl.Describe()} (rank 0)" : ""));
            return new DistributedTraining(layout, groups, status) { Device = rankDevice };
        }
        catch
        {
            world.Dispose();
            throw;
        }
    }

    /// <summary>Runs <paramref name="prepare"/> on rank 0 first, then on the others: rank 0 fills shared caches (tokenizer, token shards), the others find them made.</summary>
    public T RankZeroFirst<T>(Func<T> prepare)
    {
        if (groups is null) return prepare();
        // Preparing a corpus can take longer than any collective should: this wait has no timeout.
        if (IsWriter)
        {
            var result = prepare();
            groups.World.Barrier(Timeout.InfiniteTimeSpan);
            return result;
        }
        groups.World.Barrier(Timeout.InfiniteTimeSpan);
        return prepare();
    }

    public void Barrier() => groups?.World.Barrier();

    /// <summary>True on every rank when <paramref name="flag"/> is true on any rank of the job.</summary>
    public bool AnyRank(bool flag)
    {
        if (groups is null) return flag;
        using var t = tensor(new[] { flag ? 1 : 0 });
        groups.World.AllReduce(t, ReduceOp.Max);
        return t.item<int>() != 0;
    }

    /// <summary>Makes every rank's model identical to rank 0's (weights are drawn per process).</summary>
    public void SynchronizeModel(nn.Module model) => dataParallel?.BroadcastParameters(model);

    /// <summary>
    /// The module this rank trains: <paramref name="model"/> itself, or with tp &gt; 1 this rank's tensor-parallel part of
    /// it (split in place by its family's plan; every rank passes the same whole model, built from the same seed), or
    /// with pp &gt; 1 its pipeline stage (<see cref="Pipeline.PipelineStageModel"/>: the other stages' weights freed).
    /// </summary>
    public nn.Module ShardModel(CausalLM model)
    {
        if (groups is null || Layout is { Tp: 1, Pp: 1 }) return model;
        // Stages are partitioned on the whole model (the same on every rank), before anything is split or freed.
        int stages = Layout.Pp * Layout.VirtualStages; // virtual stage k runs on pipeline rank k mod pp
        if (Layout.Pp > 1) stageRanges = Pipeline.PipelineStage.Partition(model, stages, Layout.PpSplit);
        modelBytes = model.parameters().Sum(p => p.numel() * p.element_size());
        if (Layout.Tp > 1)
        {
            if (Layout.Pp > 1 && model.Config.VocabSize % Layout.Tp != 0)
                throw new TianGongException($"parallel: with tp and pp the last stage gathers equal vocabulary slices of the logits; vocab_size {model.Config.VocabSize} must be a multiple of tp={Layout.Tp}");
            tensorParallel = TensorParallelCausalLM.Shard(model, groups.TensorParallel);
            var (start, length) = tensorParallel.VocabularyRange;
            status?.Invoke($"rank {WorldRank}: tensor-parallel rank {groups.Position.TpRank} of {Layout.Tp} holds {tensorParallel.parameters().Sum(p => p.numel()) / 1e6:F3}M parameters, vocabulary [{start}, {start + length})");
        }
        if (Layout.Pp == 1) return tensorParallel!;
        // This rank's stage (of its tensor-parallel shards); the other stages' parameters are freed.
        int rank = groups.Position.PpRank;
        var kept = Enumerable.Range(0, stages).Where(k => k % Layout.Pp == rank)
            .SelectMany(k => Pipeline.PipelineStage.ParametersOf(model, k, stages, stageRanges![k]))
            .Distinct(ReferenceEqualityComparer.Instance).Cast<TorchSharp.Modules.Parameter>().ToList();
        stageModel = new Pipeline.PipelineStageModel(model, kept, tensorParallel);
        return stageModel;
    }

    /// <summary>The pretraining loss for the module <see cref="ShardModel"/> returned (vocabulary-parallel cross-entropy under tensor parallelism).</summary>
    public LossFunction<TokenBatch> NextTokenLoss(nn.Module trained) => tensorParallel is { } tp ? tp.NextTokenLoss : LanguageModeling.NextTokenLossFor(trained);

    /// <summary>The trainer's view: device, world rank, gradient all-reduce over the data-parallel group and loss averaging.</summary>
    /// <remarks>
    /// With ZeRO the trainer's optimizer is a <see cref="ZeroOptimizer"/> over the data-parallel group; stage 2 also replaces the gradient sync (reduce-scatter) and clipping.
    /// With tensor parallelism (after <see cref="ShardModel"/>) the optimizer's state and the model's checkpoints are
    /// gathered into the one-process layout, gradients are clipped to the norm over all shards, and the ranks of one
    /// tensor-parallel group seed their generators alike (the parts every rank holds whole must draw the same dropout).
    /// With pipeline stages (after <see cref="ShardModel"/> and <see cref="CreatePipeline"/>) each rank's optimizer covers
    /// its stage's parameters, the tied embedding's gradient is summed over first and last stage, the norm is taken over
    /// all stages, and around a checkpoint the stages are gathered on rank 0 (see <see cref="Pipeline.PipelineStageModel"/>).
    /// </remarks>
    public ParallelContext Context(Device device)
    {
        var context = DataParallelContext(device);
        if (stageModel is { } held)
        {
            var stagesOfHeld = pipeline ?? throw new InvalidOperationException("pp > 1: call CreatePipeline before Context");
            // Around a checkpoint: the stages' weights reach stage 0 (the only rank that allocates the others' tensors
            // to save them); on a load every rank allocates the whole model's until the scope closes.
            context = context with
            {
                WholeModelState = () =>
                {
                    var scope = held.WholeState();
                    stagesOfHeld.GatherModel();
                    return scope;
                },
            };
        }
        if (tensorParallel is not { } tp)
            return groups is null || Layout.Tp == 1 ? context : throw new InvalidOperationException("tp > 1: call ShardModel before Context");
        var tpGroup = groups!.TensorParallel;
        var split = tp.named_parameters().Where(p => tp.Layouts.ContainsKey(p.name)).Select(p => p.parameter).ToHashSet<TorchSharp.Modules.Parameter>(ReferenceEqualityComparer.Instance);
        var zero = context.CreateOptimizer; // ZeRO over the data-parallel group, or null: AdamW
        IOptimizer CreateInner(IReadOnlyList<ParameterGroup> parameterGroups, AdamWOptions options) => zero?.Invoke(parameterGroups, options) ?? new AdamW(parameterGroups, options);
        return context with
        {
            CreateOptimizer = (parameterGroups, options) => new TensorParallelOptimizer(CreateInner(parameterGroups, options), tp.Layouts, tpGroup),
            ClipGradients = pipeline is { Ranks: > 1 } stages
                ? (trained, maxNorm) => GlobalNormClipping.ClipTensorParallel(trained, maxNorm, split, tpGroup, stages.HoldsFirst ? null : stages.TiedParameters, groups.Pipeline)
                : (trained, maxNorm) => GlobalNormClipping.ClipTensorParallel(trained, maxNorm, split, tpGroup),
            WholeModelState = stageModel is { } stage ? () => StagesThenShards(stage, tp) : tp.WholeState,
            RandomRank = WorldRank - groups.Position.TpRank,
        };
    }

    /// <summary>
    /// tp × pp around a checkpoint: every rank gives the other stages' shards their shapes again (the tensor-parallel
    /// gather reads all of them), stage 0 of each tensor-parallel rank receives its pipeline's shards, then the
    /// tensor-parallel model assembles the whole one-process state dict. Closing puts loaded values back into the
    /// shards, then frees the other stages again.
    /// </summary>
    private IDisposable StagesThenShards(Pipeline.PipelineStageModel held, TensorParallelCausalLM tp)
    {
        var stage = held.WholeState();
        try
        {
            held.Materialise();
            pipeline!.GatherModel();
            return new Scopes(tp.WholeState(), stage);
        }
        catch
        {
            stage.Dispose();
            throw;
        }
    }

    /// <summary>Closes scopes in the given order.</summary>
    private sealed class Scopes(params IDisposable[] inOrder) : IDisposable
    {
        public void Dispose()
        {
            foreach (var scope in inOrder) scope.Dispose();
        }
    }

    private ParallelContext DataParallelContext(Device device)
    {
        if (dataParallel is null) return ParallelContext.SingleProcess(device);
        var context = new ParallelContext(device, WorldRank, groups!.World.Size, dataParallel.AllReduceGradients)
        {
            AverageOverRanks = dataParallel.Average,
            AnyRank = AnyRank,
        };
        ZeroOptimizer? zero = null; // made by the trainer through CreateOptimizer, before the first sync
        ZeroOptimizer Made() => zero ?? throw new InvalidOperationException("ZeRO: gradients synced before the optimizer was built");
        if (Layout.Zero > 0)
            context = context with
            {
                CreateOptimizer = (parameterGroups, options) =>
                {
                    zero = new ZeroOptimizer(parameterGroups, options, groups.DataParallel, Layout.Zero);
                    long unsharded = 2 * parameterGroups.Sum(g => g.Parameters.Sum(p => p.Param.numel())) * sizeof(float);
                    status?.Invoke($"ZeRO-{Layout.Zero}: optimizer state {zero.StateBytes / 1e6:F3} MB on rank {WorldRank} (AdamW on one process: {unsharded / 1e6:F3} MB of moments)");
                    return zero;
                },
            };
        if (Layout.Zero == 2)
            context = context with
            {
                SyncGradients = trained => Made().ReduceScatterGradients(trained),
                ClipGradients = (trained, maxNorm) => Made().ClipGradients(trained, maxNorm),
            };
        if (pipeline is not { Ranks: > 1 } stages) return context;

        // Pipeline stages: each trains its own parameters, its optimizer (AdamW, or ZeRO over the stage's data-parallel
        // group) over those only; the tied embedding's two halves are summed over first and last stage before the
        // data-parallel reduction (both are sums, so the order does not change the result); the norm is the whole model's.
        var inner = context.CreateOptimizer ?? ((parameterGroups, options) => new AdamW(parameterGroups, options));
        return context with
        {
            CreateOptimizer = (parameterGroups, options) => stages.CreateOptimizer(parameterGroups, mine => inner(mine, options)),
            SyncGradients = Layout.Zero == 2
                ? trained =>
                {
                    stages.AllReduceTiedGradients();
                    Made().ReduceScatterGradients(trained);
                }
                : trained =>
                {
                    dataParallel.AllReduceGradients(trained);
                    stages.AllReduceTiedGradients();
                },
            ClipGradients = Layout.Zero == 2
                ? (trained, maxNorm) => Made().ClipGradients(trained, maxNorm, stages.HoldsFirst ? null : stages.TiedParameters, groups.Pipeline)
                : stages.ClipGradients,
        };
    }

    /// <summary>This rank's rows of every global training batch (validation batches stay whole on every rank).</summary>
    public ITrainingData<TokenBatch> SliceBatches(ITrainingData<TokenBatch> data, int globalBatchSize)
    {
        if (groups is null || Layout.Dp == 1) return data;
        if (globalBatchSize % Layout.Dp != 0)
            throw new TianGongException($"training.batch_size {globalBatchSize} must be a multiple of parallel.dp {Layout.Dp} (each data-parallel rank takes an equal slice)");
        return new DataParallelSlice(data, groups.Position.DpRank, Layout.Dp);
    }

    /// <summary>
    /// This rank's pipeline stage and schedule (pp > 1), or the whole model as one stage when layers are recomputed;
    /// null when the model simply runs as it is. The trainer hands it each step's batches (<see cref="Pipeline.IStepRunner{TBatch}"/>).
    /// </summary>
    public Pipeline.PipelineParallel? CreatePipeline(Models.CausalLM lm, Pipeline.PipelineForwardStep<TokenBatch> forwardStep)
    {
        ReportParameterMemory(lm);
        if (Layout.Pp == 1 && Layout.Recompute == "none") return null;
        if (Layout.Pp > 1 && stageModel is null) throw new InvalidOperationException("pp > 1: call ShardModel before CreatePipeline");
        // Only the pipelines of data-parallel rank 0 gather their stages for the checkpoint rank 0 writes (with tp > 1,
        // each tensor-parallel rank's pipeline: rank 0 then gathers their shards).
        bool gathers = groups is null || groups.Position.DpRank == 0;
        // Under tensor parallelism the first stage looks tokens up in its vocabulary rows and the last gathers the logits.
        var ends = tensorParallel is { } tp ? new Pipeline.StageEnds((ids, context) => lm.PositionStage(tp.Embed(ids), context), tp.GatheredLogits) : null;
        pipeline = new Pipeline.PipelineParallel(lm, Layout.Pp > 1 ? groups!.Pipeline : null, Layout, forwardStep, stageRanges, stageModel, gathers, ends);
        if (Layout.Pp > 1 && IsWriter) status?.Invoke(pipeline.Describe());
        return pipeline;
    }

    /// <summary>Each rank's parameter memory, printed once at the start of a job of several processes (the per-rank memory benchmark).</summary>
    private void ReportParameterMemory(Models.CausalLM lm)
    {
        if (groups is null) return;
        long bytes = lm.parameters().Sum(p => p.numel() * p.element_size()); // after ShardModel: this rank's stage or shards
        // Short enough not to wrap in the job's output (tests and bench/pipeline.sh read it).
        status?.Invoke($"rank {WorldRank}: parameters {bytes / 1e6:F3} of {(modelBytes ?? bytes) / 1e6:F3} MB in memory" +
                       (stageModel is null ? "" : $" (stage {groups.Position.PpRank} of {Layout.Pp})"));
    }

    /// <summary>Bytes this rank handed to its communication engines (MPI, and NCCL on GPUs) so far, over all its groups (the measured side of the communication-volume benchmark).</summary>
    public long BytesSent => groups is null ? 0
        : groups.World.BytesSent + groups.DataParallel.BytesSent + groups.TensorParallel.BytesSent + groups.Pipeline.BytesSent;

    public void Dispose()
    {
        if (groups is null) return;
        status?.Invoke($"rank {WorldRank}: {BytesSent / 1e6:F3} MB sent through {(groups.World is NcclCommunicator ? "NCCL and MPI" : "MPI")}");
        if (pipeline is { Ranks: > 1 }) status?.Invoke($"rank {WorldRank}: {pipeline.WaitReport()}");
        groups.Dispose();
    }

    /// <summary>Rows [rank·B/dp, (rank+1)·B/dp) of each global batch: every rank draws the same global batch and keeps its part.</summary>
    private sealed class DataParallelSlice(ITrainingData<TokenBatch> whole, int rank, int ranks) : ITrainingData<TokenBatch>
    {
        public TokenBatch TrainBatch(long index)
        {
            using var batch = whole.TrainBatch(index);
            long rows = batch.Input.shape[0] / ranks;
            return new TokenBatch(batch.Input.narrow(0, rank * rows, rows).contiguous(), batch.Target.narrow(0, rank * rows, rows).contiguous());
        }

        public IEnumerable<TokenBatch> ValidationBatches() => whole.ValidationBatches();
    }
}
