using TianGong.Models;
using TianGong.Training;
using TorchSharp.Modules;

namespace TianGong.Vision.Training;

/// <summary>
/// What <c>pretrain-vision</c> trains and checkpoints as one module: the backbone (saved alone as the model folder),
/// one projection head per aligned level, and for MoCo and CsMI the momentum copies of both, a queue of negatives per
/// level and (CsMI) the memory bank, as buffers, so that a resumed run continues from exactly the state it stopped in.
/// <see cref="Loss"/> is the trainer's loss function; the queue, bank and momentum encoder change only in training mode.
/// </summary>
public sealed class ContrastiveModel : nn.Module
{
    private readonly ContrastiveMethod method;
    private readonly MethodSection settings;
    private readonly IImageEncoder encoder, keyEncoder;
    private readonly nn.Module backbone;
    private readonly nn.Module? key_backbone;
    private readonly ModuleList<ProjectionHead> heads;
    private readonly ModuleList<ProjectionHead>? key_heads;
    private readonly List<Tensor> queues = [];
    private readonly MemoryBank? bank;
    private readonly Func<Tensor, Tensor>? partnerImages;
    private readonly long seed;

    /// <param name="createBackbone">Makes a fresh backbone (called twice for MoCo and CsMI: query and key encoders).</param>
    /// <param name="trainImages">How many training images there are (the memory bank has one row per image).</param>
    /// <param name="partnerImages">CsMI: the normalised, unaugmented training images at some dataset indices.</param>
    public ContrastiveModel(ContrastiveMethod method, MethodSection settings, Func<nn.Module> createBackbone, long trainImages, long seed,
        Func<Tensor, Tensor>? partnerImages = null) : base(nameof(ContrastiveModel))
    {
        (this.method, this.settings, this.partnerImages, this.seed) = (method, settings, partnerImages, seed);
        backbone = createBackbone();
        encoder = backbone as IImageEncoder ?? throw new TianGongException("pretrain-vision: the backbone is not an image encoder");
        var widths = LevelWidths(encoder);
        heads = new ModuleList<ProjectionHead>(widths.Select(w => new ProjectionHead(w, settings.ProjectionHidden, settings.ProjectionDim)).ToArray());
        register_module("backbone", backbone);
        register_module("heads", heads);
        keyEncoder = encoder;
        if (method.UsesMomentumEncoder())
        {
            key_backbone = createBackbone();
            keyEncoder = (IImageEncoder)key_backbone;
            key_heads = new ModuleList<ProjectionHead>(widths.Select(w => new ProjectionHead(w, settings.ProjectionHidden, settings.ProjectionDim)).ToArray());
            // A ModuleList lists its children's parameters once registered: register before copying.
            register_module("key_backbone", key_backbone);
            register_module("key_heads", key_heads);
            // MoCo starts the key encoder as a copy of the query encoder (momentum 0 copies; fresh buffers are equal
            // already) and never back-propagates into it.
            MomentumEncoder.Update(key_backbone, backbone, 0);
            MomentumEncoder.Update(key_heads, heads, 0);
            foreach (var p in key_backbone.parameters().Concat(key_heads.parameters())) p.requires_grad = false;
            for (int level = 0; level < widths.Count; level++)
            {
                using var queue = new FeatureQueue(settings.QueueSize, settings.ProjectionDim, seed + 101 + level);
                queues.Add(queue.Features.clone());
                register_buffer($"queue{level}", queues[^1]);
            }
        }
        if (method == ContrastiveMethod.Csmi)
        {
            if (partnerImages is null) throw new TianGongException("CsMI: needs the training images to mix anchors with their neighbours");
            bank = new MemoryBank(trainImages, settings.ProjectionDim, seed + 7);
            register_buffer("bank", bank.Features);
        }
    }

    public nn.Module Backbone => backbone;

    /// <summary>The widths of the levels the heads read: the last hidden state (the features) alone, or CsMI's last <c>levels</c> ones.</summary>
    private List<long> LevelWidths(IImageEncoder e)
    {
        if (method != ContrastiveMethod.Csmi) return [e.FeatureSize];
        // The widths of transformers' hidden_states: ResNet's embedder and stages, ViT's embeddings and layers.
        List<long> widths = e.Config switch
        {
            Models.ResNet.ResNetConfig r => [r.EmbeddingSize, .. r.HiddenSizes.Select(h => (long)h)],
            Models.Vit.ViTConfig v => Enumerable.Repeat((long)v.HiddenSize, v.NumHiddenLayers + 1).ToList(),
            _ => throw new TianGongException($"CsMI: no hierarchy known for model_type '{e.Config.ModelType}'"),
        };
        if (settings.Levels > widths.Count)
            throw new TianGongException($"method.levels: the backbone has {widths.Count} hidden states, got {settings.Levels}");
        return widths.Skip(widths.Count - settings.Levels).ToList();
    }

    /// <summary>The trainer's loss function: this model's objective on one batch.</summary>
    public static LossRecord Loss(nn.Module model, VisionBatch batch) => ((ContrastiveModel)model).Loss(batch);

    public LossRecord Loss(VisionBatch batch)
    {
        var loss = method switch
        {
            ContrastiveMethod.SimClr => ContrastiveLosses.NtXent(Project(batch.First), Project(batch.Second), settings.Temperature),
            ContrastiveMethod.SupCon => ContrastiveLosses.SupCon(cat([Project(batch.First), Project(batch.Second)], 0), cat([batch.Labels, batch.Labels], 0), settings.Temperature),
            ContrastiveMethod.Scan => ContrastiveLosses.Scan(cat([Project(batch.First), Project(batch.Second)], 0), cat([batch.Labels, batch.Labels], 0), settings.ScanK, settings.Temperature),
            ContrastiveMethod.MoCo => MoCoLoss(batch),
            ContrastiveMethod.Csmi => CsmiLoss(batch),
            _ => throw new TianGongException($"unknown method {method}"),
        };
        return new LossRecord(loss, batch.Size);
    }

    private Tensor Project(Tensor pixels) => heads[0].forward(encoder.Features(pixels));

    /// <summary>MoCo v2 (He et al. 2020, Algorithm 1): momentum update, keys of the second view, InfoNCE against the queue, enqueue.</summary>
    private Tensor MoCoLoss(VisionBatch batch)
    {
        UpdateKeyEncoder();
        var query = Project(batch.First);
        Tensor key;
        using (no_grad()) key = key_heads![0].forward(keyEncoder.Features(batch.Second));
        var loss = ContrastiveLosses.MoCoInfoNce(query, key, queues[0], settings.Temperature);
        Enqueue(0, key, batch.Index);
        return loss;
    }

    /// <summary>
    /// CsMI (see Vision/Csmi.cs for the loss and its source): keys of the second view at every level; each anchor's
    /// nearest neighbours in the memory bank (after neighbour_warmup_steps; before, the next view of the batch) are
    /// its partners: the anchor's first view is mixed with its first neighbour's (unaugmented) image by λ ~ U(0, 1), and
    /// all k neighbours' bank features are extra positives at the top level. Then the bank and queues take this batch's keys.
    /// </summary>
    private Tensor CsmiLoss(VisionBatch batch)
    {
        UpdateKeyEncoder();
        long b = batch.Size;
        var keys = KeyLevels(batch.Second);
        // The bank holds training images only: validation batches (and early steps) mix with the batch's next image.
        bool useNeighbours = training && batch.Step >= settings.NeighbourWarmupSteps;
        Tensor partners;
        Tensor? neighbours = null;
        if (useNeighbours)
        {
            neighbours = bank!.Neighbours(keys[^1], batch.Indices, settings.Neighbours);      // (B, k)
            partners = partnerImages!(neighbours.select(1, 0));
        }
        else partners = batch.First.roll(1, 0);
        var partnerKeys = KeyLevels(partners);
        var lambda = Csmi.SampleLambda(b, seed, batch.Index).to(batch.First.device);
        var mixed = Csmi.Mix(batch.First, partners, lambda);
        var queries = QueryLevels(batch.First);
        var mixedQueries = QueryLevels(mixed);
        var levels = new List<CsmiLevel>();
        for (int l = 0; l < keys.Count; l++)
        {
            bool top = l == keys.Count - 1;
            var neighbourKeys = top && neighbours is not null
                ? bank!.Features.index_select(0, neighbours.flatten()).view(b, settings.Neighbours, -1)
                : null;
            levels.Add(new CsmiLevel(queries[l], keys[l], mixedQueries[l], partnerKeys[l], queues[l], neighbourKeys));
        }
        var loss = Csmi.Loss(levels, lambda, settings.Temperature);
        if (training)
        {
            bank!.Update(batch.Indices, keys[^1]);
            for (int l = 0; l < keys.Count; l++) Enqueue(l, keys[l], batch.Index);
        }
        return loss;
    }

    private List<Tensor> QueryLevels(Tensor pixels) => Levels(encoder, heads, pixels);

    private List<Tensor> KeyLevels(Tensor pixels)
    {
        using var _ = no_grad();
        return Levels(keyEncoder, key_heads!, pixels);
    }

    private List<Tensor> Levels(IImageEncoder e, ModuleList<ProjectionHead> projections, Tensor pixels)
    {
        var states = e.HiddenStates(pixels);
        var chosen = states.Skip(states.Count - projections.Count).ToList();
        return chosen.Select((s, l) => projections[l].forward(ImageFeatures.Pool(s))).ToList();
    }

    private void UpdateKeyEncoder()
    {
        if (!training) return;
        MomentumEncoder.Update(key_backbone!, backbone, settings.Momentum);
        MomentumEncoder.Update(key_heads!, heads, settings.Momentum);
    }

    /// <summary>
    /// MoCo's FIFO, with the write position a function of the micro-batch number (index × B mod K), so the queue
    /// needs no pointer of its own in the checkpoint.
    /// </summary>
    private void Enqueue(int level, Tensor keys, long index)
    {
        if (!training) return;
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var queue = queues[level];
        long size = queue.shape[0], b = keys.shape[0];
        if (b > size) throw new TianGongException($"method.queue_size: a batch of {b} keys does not fit a queue of {size}");
        var rows = (arange(b, dtype: ScalarType.Int64, device: queue.device) + index * b) % size;
        queue.index_copy_(0, rows, nn.functional.normalize(keys.detach().to(queue.dtype), dim: 1));
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) bank?.Dispose();
        base.Dispose(disposing);
    }
}
