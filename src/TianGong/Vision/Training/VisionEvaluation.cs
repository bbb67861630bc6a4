using System.Diagnostics;
using TianGong.Models;
using TorchSharp.Modules;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Vision.Training;

/// <summary>How a backbone is judged on labelled images.</summary>
public enum VisionEvalMode { LinearProbe, Finetune, Knn }

/// <param name="LabelFraction">Fine-tuning: the class-balanced share of the training labels used (0.01, 0.1, 1).</param>
/// <param name="Epochs">Passes over the (labelled) training set for the probe or fine-tuning.</param>
public sealed record VisionEvalOptions(
    VisionEvalMode Mode,
    double LabelFraction = 1,
    int K = 20,
    int Epochs = 10,
    double LearningRate = 1e-3,
    int BatchSize = 256,
    long Seed = 0,
    double KnnTemperature = 0.07);

/// <param name="TrainImages">Labelled training images the classifier saw (the probe's, fine-tuning's or kNN's bank).</param>
public sealed record VisionEvalResult(double Accuracy, VisionEvalMode Mode, long TrainImages, long TestImages, double Seconds);

/// <summary>
/// The standard judgements of a self-supervised backbone (as in SimCLR, MoCo and the CsMI paper): a linear classifier
/// on frozen features, fine-tuning the whole network on a class-balanced share of the labels, and a weighted kNN on
/// frozen features. Every one reports top-1 accuracy on the test images.
/// </summary>
public static class VisionEvaluation
{
    public static VisionEvalResult Run(nn.Module model, ImageProcessor processor, LabelledImages train, LabelledImages test, VisionEvalOptions options)
    {
        var encoder = model as IImageEncoder ?? throw new TianGongException("eval-vision: the model is not an image encoder (vit or resnet)");
        if (options.Epochs < 1) throw new TianGongException($"--epochs: must be at least 1, got {options.Epochs}");
        if (options.BatchSize < 1) throw new TianGongException($"--batch-size: must be at least 1, got {options.BatchSize}");
        var clock = Stopwatch.StartNew();
        int classes = (int)Math.Max(train.Labels.max().item<long>(), test.Labels.max().item<long>()) + 1;
        manual_seed(options.Seed);
        var (accuracy, seen) = options.Mode switch
        {
            VisionEvalMode.LinearProbe => LinearProbe(model, encoder, processor, train, test, classes, options),
            VisionEvalMode.Knn => Knn(model, encoder, processor, train, test, classes, options),
            VisionEvalMode.Finetune => Finetune(model, encoder, processor, train, test, classes, options),
            _ => throw new TianGongException($"unknown mode {options.Mode}"),
        };
        return new VisionEvalResult(accuracy, options.Mode, seen, test.Count, clock.Elapsed.TotalSeconds);
    }

    /// <summary>Frozen features (N, D) of every image, in eval mode, in batches.</summary>
    public static Tensor Features(nn.Module model, IImageEncoder encoder, ImageProcessor processor, LabelledImages images, int batchSize = 512)
    {
        using var _ = no_grad();
        bool wasTraining = model.training;
        model.eval();
        var device = model.parameters().First().device;
        var parts = new List<Tensor>();
        using (var scope = NewDisposeScope())
        {
            for (long start = 0; start < images.Count; start += batchSize)
            {
                using var inner = NewDisposeScope();
                var index = arange(start, Math.Min(start + batchSize, images.Count), dtype: ScalarType.Int64);
                var pixels = processor.Preprocess(images.Images.index_select(0, index)).to(device);
                parts.Add(encoder.Features(pixels).to(ScalarType.Float32).cpu().MoveToOuterDisposeScope());
            }
            var all = cat(parts, 0).MoveToOuterDisposeScope();
            model.train(wasTraining);
            return all;
        }
    }

    /// <summary>
    /// Logistic regression on standardised frozen features (mean and deviation of the training features), trained
    /// with Adam on shuffled mini-batches for the given epochs.
    /// </summary>
    /// <remarks>
    /// Not <see cref="Tuning.LinearProbe.FitAndPredict"/>, the few-shot text probe: that one fits tens of rows in one
    /// full batch with our AdamW and weight decay, while this one takes epochs of seeded mini-batches over thousands
    /// of images with torch's Adam, the protocol the vision tables in docs/benchmarks.md were measured with; one
    /// probe for both would change those figures.
    /// </remarks>
    private static (double, long) LinearProbe(nn.Module model, IImageEncoder encoder, ImageProcessor processor, LabelledImages train, LabelledImages test, int classes, VisionEvalOptions o)
    {
        using var scope = NewDisposeScope();
        var trainFeatures = Features(model, encoder, processor, train);
        var testFeatures = Features(model, encoder, processor, test);
        var mean = trainFeatures.mean([0], keepdim: true);
        var std = trainFeatures.std(0, keepdim: true) + 1e-6;
        trainFeatures = (trainFeatures - mean) / std;
        testFeatures = (testFeatures - mean) / std;
        using var classifier = nn.Linear(trainFeatures.shape[1], classes);
        using var optimizer = optim.Adam(classifier.parameters(), lr: o.LearningRate * 10);
        var labels = train.Labels;
        using var generator = new Generator((ulong)o.Seed ^ 0x11AE);
        for (int epoch = 0; epoch < o.Epochs; epoch++)
        {
            var order = randperm(train.Count, generator: generator);
            for (long start = 0; start < train.Count; start += o.BatchSize)
            {
                using var inner = NewDisposeScope();
                var index = order.narrow(0, start, Math.Min(o.BatchSize, train.Count - start));
                var loss = F.cross_entropy(classifier.forward(trainFeatures.index_select(0, index)), labels.index_select(0, index));
                optimizer.zero_grad();
                loss.backward();
                optimizer.step();
            }
        }
        using var _ = no_grad();
        return (Accuracy(classifier.forward(testFeatures), test.Labels), train.Count);
    }

    private static (double, long) Knn(nn.Module model, IImageEncoder encoder, ImageProcessor processor, LabelledImages train, LabelledImages test, int classes, VisionEvalOptions o)
    {
        using var scope = NewDisposeScope();
        var bank = Features(model, encoder, processor, train);
        var queries = Features(model, encoder, processor, test);
        return (KnnClassifier.Accuracy(bank, train.Labels, queries, test.Labels, o.K, o.KnnTemperature, classes), train.Count);
    }

    /// <summary>
    /// The whole network plus a new linear head, trained with AdamW on a class-balanced share of the labelled training
    /// images (LabelSubsets.Balanced, seeded), with random flips as the only augmentation, then tested in eval mode.
    /// Changes the weights of <paramref name="model"/>.
    /// </summary>
    /// <remarks>
    /// Its own loop rather than <see cref="TianGong.Training.Trainer{TBatch}"/>: the trainer runs a pretraining-style job
    /// (a run folder with checkpoints and metrics.jsonl, a warmup-and-cosine schedule over max_steps, gradient clipping,
    /// our AdamW with its betas), none of which this throwaway evaluation wants; it would also need the backbone and
    /// the new head wrapped as one module and the labelled images as an ITrainingData, and would change the numbers
    /// the CsMI-style comparisons were taken with (torch's AdamW at a constant rate, epochs over a seeded permutation).
    /// </remarks>
    private static (double, long) Finetune(nn.Module model, IImageEncoder encoder, ImageProcessor processor, LabelledImages train, LabelledImages test, int classes, VisionEvalOptions o)
    {
        using var subsetIndex = LabelSubsets.Balanced(train.Labels, o.LabelFraction, o.Seed);
        using var labelled = train.Subset(subsetIndex);
        var device = model.parameters().First().device;
        using var head = nn.Linear(encoder.FeatureSize, classes);
        head.to(device);
        var parameters = model.parameters().Concat(head.parameters()).ToList();
        foreach (var p in parameters) p.requires_grad = true;
        using var optimizer = optim.AdamW(parameters, lr: o.LearningRate, weight_decay: 0.05);
        using var generator = new Generator((ulong)o.Seed ^ 0xF17E);
        // Few labels, small batches: at least ten updates an epoch (1% of Fashion-MNIST is 600 images).
        int batch = (int)Math.Min(o.BatchSize, Math.Max(Math.Min(32, labelled.Count), labelled.Count / 10));
        model.train();
        for (int epoch = 0; epoch < o.Epochs; epoch++)
        {
            using var epochScope = NewDisposeScope();
            var order = randperm(labelled.Count, generator: generator);
            for (long start = 0; start + batch <= labelled.Count; start += batch)
            {
                using var inner = NewDisposeScope();
                var index = order.narrow(0, start, batch);
                var images = labelled.Images.index_select(0, index);
                var flip = rand([batch], generator: generator).lt(0.5).view(-1, 1, 1, 1);
                images = where(flip, images.flip(3), images);
                var pixels = processor.Preprocess(images).to(device);
                var loss = F.cross_entropy(head.forward(encoder.Features(pixels)), labelled.Labels.index_select(0, index).to(device));
                optimizer.zero_grad();
                loss.backward();
                optimizer.step();
            }
        }
        model.eval();
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var logits = new List<Tensor>();
        for (long start = 0; start < test.Count; start += 512)
        {
            var index = arange(start, Math.Min(start + 512, test.Count), dtype: ScalarType.Int64);
            logits.Add(head.forward(encoder.Features(processor.Preprocess(test.Images.index_select(0, index)).to(device))).cpu());
        }
        return (Accuracy(cat(logits, 0), test.Labels), labelled.Count);
    }

    private static double Accuracy(Tensor logits, Tensor labels)
    {
        using var correct = logits.argmax(1).eq(labels.to(logits.device)).to(ScalarType.Float32).mean();
        return correct.item<float>();
    }

    /// <summary>
    /// The image processor of a model folder (preprocessor_config.json), or, when it has none, one that leaves the size
    /// alone and maps [0, 255] to [-1, 1] per channel (ViTImageProcessor's mean and deviation 0.5).
    /// </summary>
    public static ImageProcessor ProcessorFor(string dir, IImageEncoder encoder) => ImageProcessor.FromFolder(dir)
        ?? new ImageProcessor(new ImageProcessorConfig(ImageProcessorType: "ViTImageProcessor", DoResize: false,
            ImageMean: Enumerable.Repeat(0.5, encoder.NumChannels).ToList(), ImageStd: Enumerable.Repeat(0.5, encoder.NumChannels).ToList()));
}
