using SkiaSharp;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Vision;

/// <summary>One image file and the class its folder names.</summary>
public sealed record ImageSample(string Path, int Label);

/// <summary>
/// A folder of images laid out as torchvision's ImageFolder reads it: <c>root/CLASS/*.png|jpg|...</c>, one
/// subfolder per class; classes are the subfolder names in ordinal order, so ids do not depend on the file system.
/// Images are decoded with SkiaSharp (a maintained native codec library) into uint8 (C, H, W) tensors.
/// </summary>
public sealed class ImageFolder
{
    private static readonly HashSet<string> Extensions = new(StringComparer.OrdinalIgnoreCase) { ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp" };

    public string Root { get; }
    public IReadOnlyList<string> Classes { get; }
    public IReadOnlyList<ImageSample> Samples { get; }

    private ImageFolder(string root, IReadOnlyList<string> classes, IReadOnlyList<ImageSample> samples) =>
        (Root, Classes, Samples) = (root, classes, samples);

    public static ImageFolder Open(string root)
    {
        if (!Directory.Exists(root)) throw new TianGongException($"{root}: image folder not found");
        var classes = Directory.GetDirectories(root).Select(Path.GetFileName).OfType<string>()
            .Where(name => !name.StartsWith('.')).Order(StringComparer.Ordinal).ToList();
        if (classes.Count == 0) throw new TianGongException($"{root}: no class subfolders (expected root/CLASS/image.png)");
        var samples = new List<ImageSample>();
        for (int label = 0; label < classes.Count; label++)
            samples.AddRange(Directory.EnumerateFiles(Path.Combine(root, classes[label]), "*", SearchOption.AllDirectories)
                .Where(f => Extensions.Contains(Path.GetExtension(f))).Order(StringComparer.Ordinal)
                .Select(f => new ImageSample(f, label)));
        if (samples.Count == 0) throw new TianGongException($"{root}: no images ({string.Join(", ", Extensions)}) in its class subfolders");
        return new ImageFolder(root, classes, samples);
    }

    /// <summary>
    /// Every image as (N, channels, height, width) uint8 with its label; images of another size are resized
    /// (bilinear, antialiased) so that they stack.
    /// </summary>
    public LabelledImages LoadAll(int channels, int height, int width)
    {
        using var scope = NewDisposeScope();
        var images = new List<Tensor>(Samples.Count);
        foreach (var sample in Samples)
        {
            var image = Read(sample.Path, channels);                                         // (C, h, w)
            if (image.shape[1] != height || image.shape[2] != width)
                image = F.interpolate(image.unsqueeze(0).to(ScalarType.Float32), [height, width], mode: InterpolationMode.Bilinear,
                    align_corners: false, antialias: true).squeeze(0).round().clamp(0, 255).to(ScalarType.Byte);
            images.Add(image);
        }
        var labels = tensor(Samples.Select(s => (long)s.Label).ToArray());
        return new LabelledImages(stack(images).MoveToOuterDisposeScope(), labels.MoveToOuterDisposeScope(), Classes);
    }

    /// <summary>
    /// Decodes one image file to uint8 (channels, H, W): 3 = RGB (alpha dropped, as PIL's convert("RGB")), 1 = luma
    /// with PIL's convert("L") weights (0.299, 0.587, 0.114 in 16-bit fixed point).
    /// </summary>
    public static Tensor Read(string path, int channels)
    {
        if (channels is not (1 or 3)) throw new TianGongException($"image channels: must be 1 (greyscale) or 3 (RGB), got {channels}");
        if (!File.Exists(path)) throw new TianGongException($"{path}: image file not found");
        using var codec = SKCodec.Create(path) ?? throw new TianGongException($"{path}: not an image SkiaSharp can decode (PNG, JPEG, BMP, GIF, WebP)");
        return Decode(codec, channels, path);
    }

    /// <summary>The pixels of an opened codec as uint8 (channels, H, W); <paramref name="where"/> names the source in errors.</summary>
    internal static Tensor Decode(SKCodec codec, int channels, string where)
    {
        if (channels is not (1 or 3)) throw new TianGongException($"image channels: must be 1 (greyscale) or 3 (RGB), got {channels}");
        var info = new SKImageInfo(codec.Info.Width, codec.Info.Height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        // GetPixels rather than SKBitmap.Decode: a truncated file decodes "successfully" there, its missing rows left blank.
        using var bitmap = new SKBitmap(info);
        var result = codec.GetPixels(info, bitmap.GetPixels());
        if (result != SKCodecResult.Success) throw new TianGongException($"{where}: the image data is corrupt or truncated ({result})");
        var rgba = bitmap.GetPixelSpan();
        int h = info.Height, w = info.Width;
        var data = new byte[channels * h * w];
        int plane = h * w;
        for (int p = 0; p < plane; p++)
        {
            byte r = rgba[4 * p], g = rgba[4 * p + 1], b = rgba[4 * p + 2];
            if (channels == 3)
            {
                data[p] = r;
                data[plane + p] = g;
                data[2 * plane + p] = b;
            }
            else data[p] = (byte)((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16);
        }
        return tensor(data, [channels, h, w]);
    }
}
