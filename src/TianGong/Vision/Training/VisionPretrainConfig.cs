using System.Text.Json.Nodes;
using TianGong.Models;
using TianGong.Training;

namespace TianGong.Vision.Training;

/// <summary>The pretraining objectives of <c>pretrain-vision --method</c>.</summary>
public enum ContrastiveMethod { SimClr, MoCo, Csmi, SupCon, Scan }

public static class ContrastiveMethods
{
    public static readonly IReadOnlyList<string> Names = ["simclr", "moco", "csmi", "supcon", "scan"];

    public static ContrastiveMethod Parse(string name) => name.ToLowerInvariant() switch
    {
        "simclr" => ContrastiveMethod.SimClr,
        "moco" => ContrastiveMethod.MoCo,
        "csmi" => ContrastiveMethod.Csmi,
        "supcon" => ContrastiveMethod.SupCon,
        "scan" => ContrastiveMethod.Scan,
        _ => throw new TianGongException($"--method: must be one of {string.Join(", ", Names)}, got '{name}'"),
    };

    public static string Name(this ContrastiveMethod method) => Names[(int)method];

    /// <summary>MoCo and CsMI keep a momentum encoder and a queue of negatives.</summary>
    public static bool UsesMomentumEncoder(this ContrastiveMethod method) => method is ContrastiveMethod.MoCo or ContrastiveMethod.Csmi;
}

/// <summary>
/// Which images to pretrain on: "fashion-mnist" (Debian's dataset-fashion-mnist, installed on first use) or an image
/// folder (root/CLASS/*.png), read at channels × image_size × image_size.
/// </summary>
/// <param name="TrainLimit">Pretrain on a class-balanced subset of this many images (all when null): small budgets, tests.</param>
/// <param name="ValImages">Images of the test split whose contrastive loss is the run's validation loss.</param>
public sealed record VisionDataSection(
    string Dataset = "fashion-mnist",
    int Channels = 1,
    int ImageSize = 28,
    int? TrainLimit = null,
    int ValImages = 512,
    IReadOnlyList<double>? ImageMean = null,
    IReadOnlyList<double>? ImageStd = null)
{
    public const string FashionMnistName = "fashion-mnist";

    // Fashion-MNIST's pixel mean and standard deviation over the training split (on the 0..1 scale).
    public IReadOnlyList<double> ImageMean { get; init; } = ImageMean ?? [0.2860];
    public IReadOnlyList<double> ImageStd { get; init; } = ImageStd ?? [0.3530];

    public void Validate(string where)
    {
        if (string.IsNullOrWhiteSpace(Dataset)) throw new TianGongException($"{where}.dataset: must be fashion-mnist or an image folder path");
        ConfigChecks.OneOf($"{where}.channels", Channels.ToString(), "1", "3");
        ConfigChecks.InRange($"{where}.image_size", ImageSize, 1, 4096);
        if (TrainLimit is { } limit) ConfigChecks.InRange($"{where}.train_limit", limit, 2, int.MaxValue);
        ConfigChecks.InRange($"{where}.val_images", ValImages, 2, int.MaxValue);
        if (ImageMean.Count != Channels || ImageStd.Count != Channels)
            throw new TianGongException($"{where}.image_mean / image_std: need {Channels} value(s) each (one per channel), got {ImageMean.Count} and {ImageStd.Count}");
        if (ImageStd.Any(s => s <= 0)) throw new TianGongException($"{where}.image_std: every value must be positive");
    }
}

/// <summary>The objective's settings; each method reads the ones it needs (see <see cref="ContrastiveModel"/>).</summary>
/// <param name="Levels">CsMI: how many of the backbone's last hidden states are aligned, each with its own head and queue.</param>
/// <param name="Neighbours">CsMI: semantic neighbours per anchor taken from the memory bank as extra positives.</param>
/// <param name="NeighbourWarmupSteps">CsMI: steps before neighbours are trusted (the bank starts random); before, partners are other images of the batch and there are no extra positives.</param>
/// <param name="ScanK">SCAN: how many nearest same-label samples each anchor pulls.</param>
public sealed record MethodSection(
    double Temperature = 0.2,
    int ProjectionHidden = 128,
    int ProjectionDim = 64,
    int QueueSize = 4096,
    double Momentum = 0.99,
    int Levels = 2,
    int Neighbours = 4,
    int NeighbourWarmupSteps = 50,
    int ScanK = 4)
{
    public void Validate(string where)
    {
        ConfigChecks.InRange($"{where}.temperature", Temperature, 0, 10, minInclusive: false);
        ConfigChecks.InRange($"{where}.projection_hidden", ProjectionHidden, 1, 1 << 16);
        ConfigChecks.InRange($"{where}.projection_dim", ProjectionDim, 1, 1 << 16);
        ConfigChecks.InRange($"{where}.queue_size", QueueSize, 1, 1 << 24);
        ConfigChecks.InRange($"{where}.momentum", Momentum, 0, 1);
        ConfigChecks.InRange($"{where}.levels", Levels, 1, 64);
        ConfigChecks.InRange($"{where}.neighbours", Neighbours, 1, 1024);
        ConfigChecks.InRange($"{where}.neighbour_warmup_steps", NeighbourWarmupSteps, 0, int.MaxValue);
        ConfigChecks.InRange($"{where}.scan_k", ScanK, 1, 1 << 16);
    }
}

/// <summary>
/// A vision pretraining run in one JSON file (configs/fashion-*.json): the backbone (a Hugging Face config.json object,
/// model_type vit or resnet), the images, the objective's settings, the augmentations and the optimisation (the
/// training section of <see cref="PretrainConfig"/>; seq_len is not used). Read strictly, like PretrainConfig.
/// </summary>
public sealed record VisionPretrainConfig(
    IModelConfig Model,
    VisionDataSection Data,
    MethodSection Method,
    AugmentationOptions Augmentation,
    TrainingSection Training,
    JsonObject Source)
{
    private static readonly string[] Sections = ["model", "data", "method", "augmentation", "training"];

    public static VisionPretrainConfig Load(string path)
    {
        if (!File.Exists(path)) throw new TianGongException($"{path}: config file not found");
        return Parse(ConfigJson.ReadFile(path), path);
    }

    public static VisionPretrainConfig Parse(JsonNode root, string path)
    {
        if (root is not JsonObject obj) throw new TianGongException($"{path}: expected a JSON object");
        foreach (var (key, _) in obj)
            if (!Sections.Contains(key))
                throw new TianGongException($"{path}: unknown section '{key}' (known sections: {string.Join(", ", Sections)})");
        var model = ModelConfigs.Parse(obj["model"] ?? throw new TianGongException($"{path}: missing section 'model'"), $"{path}: model", strict: true);
        if (model.ModelType is not ("vit" or "resnet"))
            throw new TianGongException($"{path}: model.model_type: pretrain-vision trains vit or resnet backbones, got '{model.ModelType}'");
        var data = Section<VisionDataSection>(obj, "data", path);
        var method = Section<MethodSection>(obj, "method", path);
        var augmentation = Section<AugmentationOptions>(obj, "augmentation", path);
        var training = Section<TrainingSection>(obj, "training", path);
        data.Validate($"{path}: data");
        method.Validate($"{path}: method");
        try
        {
            augmentation.Validate();
        }
        catch (TianGongException e)
        {
            throw new TianGongException($"{path}: augmentation.{e.Message}");
        }
        training.Validate($"{path}: training", int.MaxValue);
        if (model is Models.Vit.ViTConfig vit && (vit.ImageSize != data.ImageSize || vit.NumChannels != data.Channels))
            throw new TianGongException($"{path}: model takes {vit.NumChannels}×{vit.ImageSize}×{vit.ImageSize} images (num_channels, image_size) but data gives {data.Channels}×{data.ImageSize}×{data.ImageSize}");
        if (model is Models.ResNet.ResNetConfig resnet && resnet.NumChannels != data.Channels)
            throw new TianGongException($"{path}: model.num_channels is {resnet.NumChannels} but data.channels is {data.Channels}");
        return new VisionPretrainConfig(model, data, method, augmentation, training, obj);
    }

    /// <summary>The preprocessor_config.json saved beside the backbone: resize to the training size, rescale, normalise as in training.</summary>
    public ImageProcessorConfig Processor => new(
        ImageProcessorType: "ViTImageProcessor", DoResize: true, Size: new ImageSize(Data.ImageSize, Data.ImageSize), Resample: 2,
        DoRescale: true, RescaleFactor: 1 / 255.0, DoNormalize: true, ImageMean: Data.ImageMean, ImageStd: Data.ImageStd);

    private static T Section<T>(JsonObject root, string name, string path) =>
        ConfigJson.Read<T>(root[name] ?? new JsonObject(), $"{path}: {name}", strict: true);
}
