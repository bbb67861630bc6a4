using System.Diagnostics;
using TianGong.Data;

namespace TianGong.Vision;

/// <summary>One split of an image-classification dataset held in memory: images (N, C, H, W) uint8 and labels (N) int64.</summary>
public sealed record LabelledImages(Tensor Images, Tensor Labels, IReadOnlyList<string> Classes) : IDisposable
{
    public long Count => Labels.shape[0];

    /// <summary>The images at <paramref name="indices"/> as float32 (B, C, H, W) in [0, 1], what augmentations take.</summary>
    public Tensor Pixels(Tensor indices)
    {
        using var scope = NewDisposeScope();
        return (Images.index_select(0, indices).to(ScalarType.Float32) / 255).MoveToOuterDisposeScope();
    }

    /// <summary>A new set holding copies of the samples at <paramref name="indices"/> (a few-label subset, a validation slice).</summary>
    public LabelledImages Subset(Tensor indices) => new(Images.index_select(0, indices), Labels.index_select(0, indices), Classes);

    public void Dispose()
    {
        Images.Dispose();
        Labels.Dispose();
    }
}

/// <summary>
/// Fashion-MNIST (Zalando, 70 000 28×28 greyscale images of 10 kinds of clothing) from Debian's
/// <c>dataset-fashion-mnist</c> package, which puts the four gzipped IDX files in /usr/share/datasets/fashion-mnist.
/// When they are missing, <see cref="Load"/> asks the project's setup to install the package (./tiangong exports
/// <c>TIANGONG_SETUP</c>, the script with <c>ensure_fashion_mnist</c>), unless <c>TIANGONG_OFFLINE=1</c>.
/// </summary>
public static class FashionMnist
{
    public const string Package = "dataset-fashion-mnist";
    public const string DefaultDirectory = "/usr/share/datasets/fashion-mnist";
    public const string DirectoryVariable = "TIANGONG_FASHION_MNIST";
    public const string SetupVariable = "TIANGONG_SETUP";

    /// <summary>The labels' names, by class id, as the dataset's README gives them.</summary>
    public static readonly IReadOnlyList<string> Classes =
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

    public static string Directory() =>
        Environment.GetEnvironmentVariable(DirectoryVariable) is { Length: > 0 } dir ? dir : DefaultDirectory;

    /// <summary>The train (60 000) or test (10 000) split: images (N, 1, 28, 28) uint8, labels (N) int64 in 0..9.</summary>
    public static LabelledImages Load(string split, string? directory = null, Action<string>? status = null)
    {
        var prefix = split switch
        {
            "train" => "train",
            "test" => "t10k",
            _ => throw new TianGongException($"Fashion-MNIST split: must be train or test, got '{split}'"),
        };
        var dir = directory ?? Directory();
        string imagesPath = Path.Combine(dir, $"{prefix}-images-idx3-ubyte.gz"), labelsPath = Path.Combine(dir, $"{prefix}-labels-idx1-ubyte.gz");
        if (!File.Exists(imagesPath) || !File.Exists(labelsPath))
        {
            if (directory is null) Install(status);
            if (!File.Exists(imagesPath) || !File.Exists(labelsPath))
                throw new TianGongException($"Fashion-MNIST: {imagesPath} or {labelsPath} is missing; install Debian's {Package} package (apt-get install {Package})");
        }
        var images = IdxFile.ReadBytes(imagesPath);
        var labels = IdxFile.ReadBytes(labelsPath);
        try
        {
            if (images.dim() != 3 || labels.dim() != 1 || images.shape[0] != labels.shape[0])
                throw new TianGongException($"{imagesPath}: expected (N, 28, 28) images and N labels, got [{string.Join(", ", images.shape)}] and [{string.Join(", ", labels.shape)}]");
            using var longLabels = labels.to(ScalarType.Int64);
            if (longLabels.max().item<long>() >= Classes.Count)
                throw new TianGongException($"{labelsPath}: label {longLabels.max().item<long>()} is outside 0..{Classes.Count - 1}");
            return new LabelledImages(images.unsqueeze(1), longLabels.clone(), Classes);
        }
        finally
        {
            images.Dispose();
            labels.Dispose();
        }
    }

    /// <summary>Runs setup's ensure_fashion_mnist (apt-get install), as the npm datasets are fetched on first use.</summary>
    private static void Install(Action<string>? status)
    {
        if (Environment.GetEnvironmentVariable(DatasetFetcher.OfflineVariable) is "1" or "true") return;
        if (Environment.GetEnvironmentVariable(SetupVariable) is not { Length: > 0 } setup || !File.Exists(setup)) return;
        status?.Invoke($"installing Debian's {Package} package (Fashion-MNIST)");
        var psi = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in new[] { "-c", "source \"$0\" && ensure_fashion_mnist", setup }) psi.ArgumentList.Add(arg);
        using var process = Process.Start(psi) ?? throw new TianGongException("could not start bash to install Fashion-MNIST");
        var stderr = process.StandardError.ReadToEndAsync();
        process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0)
            throw new TianGongException($"installing {Package} failed (exit {process.ExitCode}): {stderr.Result.Trim()}");
    }
}
