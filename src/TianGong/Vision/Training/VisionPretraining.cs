using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Models;
using TianGong.Training;

namespace TianGong.Vision.Training;

/// <param name="Method">The objective (simclr, moco, csmi, supcon, scan).</param>
public sealed record VisionPretrainOptions(string OutDir, ContrastiveMethod Method, bool Resume = false, int? MaxSteps = null, long? Seed = null,
    Device? Device = null, string? DataDirectory = null);

/// <summary>
/// A whole vision pretraining run from one config, on the generic <see cref="Trainer{TBatch}"/> (same progress,
/// metrics.jsonl, loss plot and checkpoints as <see cref="Pretraining"/>): images, backbone from scratch, the
/// method's heads and state in a <see cref="ContrastiveModel"/>, and at every checkpoint the backbone alone saved as a
/// Hugging Face model folder (config.json, model.safetensors, preprocessor_config.json) that eval-vision and embed read.
/// </summary>
public static class VisionPretraining
{
    public static PretrainResult Run(VisionPretrainConfig config, VisionPretrainOptions options, PretrainCallbacks? callbacks = null, CancellationToken cancel = default)
    {
        callbacks ??= new PretrainCallbacks();
        var training = config.Training.WithOverrides(options.Seed, options.MaxSteps);
        set_num_threads(training.Threads ?? Environment.ProcessorCount);
        var outDir = Path.GetFullPath(options.OutDir);
        TrainingCheckpoint.CheckRunFolder(outDir, options.Resume);
        var run = RunFolder.Prepare(outDir, callbacks.Status);
        var device = options.Device ?? CPU;
        // The queues and the memory bank are updated in place through references taken at construction; moving the
        // module to another device is not known to keep them, so the stateful methods stay on the CPU until tested there.
        if (device.type != DeviceType.CPU && options.Method.UsesMomentumEncoder())
            throw new TianGongException($"--device: --method {options.Method.Name()} runs on the CPU only for now (simclr, supcon and scan run on any device)");

        using var train = LoadSplit(config.Data, "train", training.Seed, options.DataDirectory, callbacks);
        using var validation = LoadSplit(config.Data, "test", training.Seed, options.DataDirectory, callbacks, config.Data.ValImages);
        if (training.BatchSize > train.Count)
            throw new TianGongException($"training.batch_size: {training.BatchSize} is more than the {train.Count} training images");
        var processor = new ImageProcessor(config.Processor, "data");
        var data = new VisionTrainingData(train, validation, new ContrastiveAugmentation(config.Augmentation), processor,
            training.BatchSize, training.GradAccum, training.Seed, device);

        manual_seed(training.Seed);
        using var model = new ContrastiveModel(options.Method, config.Method, () => NewBackbone(config.Model), train.Count, training.Seed, data.Normalised);
        model.to(device);
        var sourceJson = (JsonObject)config.Source.DeepClone();
        sourceJson["method_name"] = options.Method.Name();
        sourceJson["training"] = ConfigJson.ToNode(training);
        if (options.Resume) CheckSameMethod(outDir, options.Method);
        var trainer = new Trainer<VisionBatch>(model, data, ContrastiveModel.Loss, Trainer.DecayGroups(model, training.WeightDecay),
            ParallelContext.SingleProcess(device), training, outDir, sourceJson)
        {
            TokensPerStep = (long)training.BatchSize * training.GradAccum,                     // images per step: the view shows img/s
            OnProgress = callbacks.Progress,
            OnCheckpoint = _ =>
            {
                ModelFolder.Save(outDir, model.Backbone, config.Model, null);
                config.Processor.Save(Path.Combine(outDir, ImageProcessorConfig.FileName));
                run.SaveLossPlot();
            },
        };
        long steps = trainer.Train(options.Resume, cancel);
        return new PretrainResult(outDir, steps, steps < training.MaxSteps, run.LastValLoss(), model.Backbone.parameters().Sum(p => p.numel()), run.MetricsPath, run.LossPlotPath);
    }

    /// <summary>A backbone with random weights from the seeded generator, as its family initialises them.</summary>
    public static nn.Module NewBackbone(IModelConfig config)
    {
        var model = ModelConfigs.CreateModel(config);
        switch (model)
        {
            case Models.Vit.ViTModel vit: vit.InitializeWeights(); break;
            case Models.Vit.ViTForImageClassification vit: vit.InitializeWeights(); break;
            case Models.ResNet.ResNetModel resnet: resnet.InitializeWeights(); break;
            case Models.ResNet.ResNetForImageClassification resnet: resnet.InitializeWeights(); break;
        }
        return model;
    }

    /// <summary>
    /// A split of the configured dataset: Fashion-MNIST's train or test split, or for an image folder, a seeded
    /// 90/10 cut of it. <paramref name="limit"/> (else data.train_limit for the train split) keeps a class-balanced subset.
    /// </summary>
    public static LabelledImages LoadSplit(VisionDataSection data, string split, long seed, string? directory, PretrainCallbacks callbacks, int? limit = null)
    {
        LabelledImages all;
        if (data.Dataset == VisionDataSection.FashionMnistName)
        {
            all = FashionMnist.Load(split, directory, callbacks.Status);
            if (all.Images.shape[2] != data.ImageSize || all.Images.shape[1] != data.Channels)
            {
                all.Dispose();
                throw new TianGongException($"data: Fashion-MNIST images are 1×28×28; set data.channels 1 and data.image_size 28");
            }
        }
        else
        {
            using var everything = ImageFolder.Open(data.Dataset).LoadAll(data.Channels, data.ImageSize, data.ImageSize);
            using var generator = new Generator((ulong)seed ^ 0xF01D);
            using var order = randperm(everything.Count, generator: generator);
            long cut = Math.Max(1, everything.Count / 10);
            using var chosen = split == "test" ? order[..(int)cut] : order[(int)cut..];
            all = everything.Subset(chosen);
        }
        limit ??= split == "train" ? data.TrainLimit : null;
        if (limit is not { } n || n >= all.Count) return all;
        using (all)
        {
            if (split == "test")
            {
                using var first = arange(n, dtype: ScalarType.Int64);
                return all.Subset(first);
            }
            using var subset = LabelSubsets.Balanced(all.Labels, (double)n / all.Count, seed);
            return all.Subset(subset);
        }
    }


    /// <summary>A checkpoint of one method cannot continue as another: the heads, queues and bank differ.</summary>
    private static void CheckSameMethod(string outDir, ContrastiveMethod method)
    {
        var (_, dir) = TrainingCheckpoint.List(outDir)[^1];
        var statePath = Path.Combine(dir, "trainer_state.json");
        if (!File.Exists(statePath)) return;
        var saved = ConfigJson.ReadFile(statePath)["config"]?["method_name"]?.GetValue<string>();
        if (saved is not null && saved != method.Name())
            throw new TianGongException($"{outDir}: the run was pretrained with --method {saved}; resume it with that method, got {method.Name()}");
    }
}
