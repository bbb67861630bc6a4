using TianGong.Data;
using TianGong.Models;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Vision;

/// <summary>
/// How strongly <see cref="ContrastiveAugmentation"/> distorts a view. Defaults follow SimCLR's recipe (Chen et al.
/// 2020, appendix A): random resized crop of 8-100% of the area (here 20-100%, as MoCo v2 and small images use),
/// flip with p 0.5, colour jitter with p 0.8, Gaussian blur with σ in [0.1, 2.0]. <see cref="None"/> is the identity.
/// </summary>
public sealed record AugmentationOptions(
    double CropScaleMin = 0.2,
    double CropScaleMax = 1.0,
    double CropRatioMin = 3.0 / 4,
    double CropRatioMax = 4.0 / 3,
    double FlipProbability = 0.5,
    double JitterProbability = 0.8,
    double Brightness = 0.4,
    double Contrast = 0.4,
    double Saturation = 0.4,
    double BlurProbability = 0.5,
    double BlurSigmaMin = 0.1,
    double BlurSigmaMax = 2.0,
    int BlurKernelSize = 3)
{
    /// <summary>Zero strength: every view is the image itself.</summary>
    public static AugmentationOptions None => new(1, 1, 1, 1, 0, 0, 0, 0, 0, 0);

    public void Validate()
    {
        ConfigChecks.InRange("crop_scale_min", CropScaleMin, 0, 1, minInclusive: false);
        ConfigChecks.InRange("crop_scale_max", CropScaleMax, CropScaleMin, 1);
        ConfigChecks.InRange("crop_ratio_min", CropRatioMin, 0, 1, minInclusive: false);
        ConfigChecks.InRange("crop_ratio_max", CropRatioMax, 1, 10);
        ConfigChecks.InRange("flip_probability", FlipProbability, 0, 1);
        ConfigChecks.InRange("jitter_probability", JitterProbability, 0, 1);
        ConfigChecks.InRange("brightness", Brightness, 0, 1);
        ConfigChecks.InRange("contrast", Contrast, 0, 1);
        ConfigChecks.InRange("saturation", Saturation, 0, 1);
        ConfigChecks.InRange("blur_probability", BlurProbability, 0, 1);
        ConfigChecks.InRange("blur_sigma_min", BlurSigmaMin, 0, 100, minInclusive: false);
        ConfigChecks.InRange("blur_sigma_max", BlurSigmaMax, BlurSigmaMin, 100);
        if (BlurKernelSize < 1 || BlurKernelSize % 2 == 0)
            throw new TianGongException($"blur_kernel_size: must be a positive odd number, got {BlurKernelSize}");
    }
}

/// <summary>
/// Random views of a batch for contrastive learning, as tensor ops on the whole batch: random resized crop and
/// horizontal flip in one affine resampling (grid_sample), brightness / contrast / saturation jitter, Gaussian blur.
/// Every random number comes from a torch.Generator seeded by (seed, step, view), so a resumed run sees exactly the
/// views an unbroken one would, and two views of one step differ.
/// </summary>
public sealed class ContrastiveAugmentation
{
    private readonly AugmentationOptions options;

    public ContrastiveAugmentation(AugmentationOptions options)
    {
        options.Validate();
        this.options = options;
    }

    /// <summary>images (B, C, H, W) float in [0, 1] → a view of the same shape, in [0, 1].</summary>
    public Tensor Apply(Tensor images, long seed, long step, int view)
    {
        if (images.dim() != 4) throw new TianGongException($"augmentation: expected images (B, C, H, W), got ({string.Join(", ", images.shape)})");
        using var scope = NewDisposeScope();
        using var generator = new Generator(SplitMix64.Hash((ulong)seed, (ulong)step, (ulong)view));
        var x = images.to(ScalarType.Float32);
        x = CropAndFlip(x, generator);
        x = Jitter(x, generator);
        x = Blur(x, generator);
        return x.MoveToOuterDisposeScope();
    }

    /// <summary>Two views of one step (view 0 and view 1), as SimCLR and MoCo feed their two encoders.</summary>
    public (Tensor First, Tensor Second) Views(Tensor images, long seed, long step) =>
        (Apply(images, seed, step, 0), Apply(images, seed, step, 1));

    /// <summary>
    /// torchvision's RandomResizedCrop box (10 tries of area and log-uniform aspect ratio, else the whole image
    /// clamped to the ratio range), then one affine map per image from output to crop: with align_corners false the
    /// output pixel u ∈ [-1, 1] samples crop coordinate (w/W)·u + (2·left + w)/W - 1, negated in u for a flip.
    /// </summary>
    private Tensor CropAndFlip(Tensor x, Generator generator)
    {
        long b = x.shape[0], height = x.shape[2], width = x.shape[3];
        const int Tries = 10;
        var draws = rand([b, Tries, 4], generator: generator).data<float>().ToArray();       // area, ratio, top, left
        var flips = rand([b], generator: generator).data<float>().ToArray();
        var theta = new float[b * 6];
        double logRatioMin = Math.Log(options.CropRatioMin), logRatioMax = Math.Log(options.CropRatioMax);
        for (int i = 0; i < b; i++)
        {
            var (top, left, h, w) = (0L, 0L, height, width);
            bool found = false;
            for (int t = 0; t < Tries && !found; t++)
            {
                int at = (i * Tries + t) * 4;
                double area = height * width * (options.CropScaleMin + (options.CropScaleMax - options.CropScaleMin) * draws[at]);
                double ratio = Math.Exp(logRatioMin + (logRatioMax - logRatioMin) * draws[at + 1]);
                long cw = (long)Math.Round(Math.Sqrt(area * ratio)), ch = (long)Math.Round(Math.Sqrt(area / ratio));
                if (cw <= 0 || ch <= 0 || cw > width || ch > height) continue;
                (h, w) = (ch, cw);
                top = Math.Min(height - ch, (long)(draws[at + 2] * (height - ch + 1)));
                left = Math.Min(width - cw, (long)(draws[at + 3] * (width - cw + 1)));
                found = true;
            }
            if (!found)
            {
                double inRatio = (double)width / height;
                if (inRatio < options.CropRatioMin) (w, h) = (width, (long)Math.Round(width / options.CropRatioMin));
                else if (inRatio > options.CropRatioMax) (h, w) = (height, (long)Math.Round(height * options.CropRatioMax));
                (top, left) = ((height - h) / 2, (width - w) / 2);
            }
            double sx = (double)w / width * (flips[i] < options.FlipProbability ? -1 : 1);
            theta[i * 6 + 0] = (float)sx;
            theta[i * 6 + 2] = (float)((2.0 * left + w) / width - 1);
            theta[i * 6 + 4] = (float)((double)h / height);
            theta[i * 6 + 5] = (float)((2.0 * top + h) / height - 1);
        }
        var grid = F.affine_grid(tensor(theta, [b, 2, 3]), [b, x.shape[1], height, width], align_corners: false);
        return F.grid_sample(x, grid, GridSampleMode.Bilinear, GridSamplePaddingMode.Border, align_corners: false);
    }

    /// <summary>
    /// torchvision's adjust_brightness (scale), adjust_contrast (blend with the mean grey level) and adjust_saturation
    /// (blend with the grey image; colour only), each factor uniform in [1 - s, 1 + s], applied to an image with
    /// probability jitter_probability. The order is fixed (torchvision shuffles it) so that one generator draw decides a view.
    /// </summary>
    private Tensor Jitter(Tensor x, Generator generator)
    {
        long b = x.shape[0];
        var draws = rand([b, 4], generator: generator);
        var apply = draws[.., 0].lt(options.JitterProbability).to(ScalarType.Float32).view(b, 1, 1, 1);
        Tensor Factor(int column, double strength) =>
            1 + apply * strength * (2 * draws[.., column] - 1).view(b, 1, 1, 1);              // 1 where not applied
        x = (x * Factor(1, options.Brightness)).clamp(0, 1);
        var contrast = Factor(2, options.Contrast);
        x = (contrast * x + (1 - contrast) * Grey(x).mean([1, 2, 3], keepdim: true)).clamp(0, 1);
        if (x.shape[1] == 3)
        {
            var saturation = Factor(3, options.Saturation);
            x = (saturation * x + (1 - saturation) * Grey(x)).clamp(0, 1);
        }
        return x;
    }

    // ITU-R 601 luma, as torchvision's rgb_to_grayscale; a one-channel image is its own grey level.
    private static Tensor Grey(Tensor x) => x.shape[1] == 3
        ? (0.299 * x[.., 0..1] + 0.587 * x[.., 1..2] + 0.114 * x[.., 2..3])
        : x;

    /// <summary>
    /// Separable Gaussian blur with reflect padding (torchvision's GaussianBlur), σ uniform in [σmin, σmax] per image;
    /// images not drawn for blurring get the unit impulse kernel, so the batch stays one grouped convolution.
    /// </summary>
    private Tensor Blur(Tensor x, Generator generator)
    {
        long b = x.shape[0], c = x.shape[1];
        int k = options.BlurKernelSize;
        var draws = rand([b, 2], generator: generator);
        if (k == 1) return x;
        var sigma = (options.BlurSigmaMin + (options.BlurSigmaMax - options.BlurSigmaMin) * draws[.., 1]).view(b, 1);   // (B, 1)
        var offsets = (arange(k, dtype: ScalarType.Float32) - k / 2).view(1, k);                                       // (1, k)
        var gauss = (-(offsets * offsets) / (2 * sigma * sigma)).exp();
        gauss = gauss / gauss.sum(1, keepdim: true);                                                                   // (B, k)
        var impulse = zeros(1, k);
        impulse[0, k / 2] = tensor(1f);
        var blur = draws[.., 0].lt(options.BlurProbability).view(b, 1);
        var kernel = where(blur, gauss, impulse).repeat_interleave(c, dim: 0);                                         // (B·C, k)
        var flat = x.reshape(1, b * c, x.shape[2], x.shape[3]);
        flat = F.conv2d(F.pad(flat, [k / 2, k / 2, 0, 0], PaddingModes.Reflect), kernel.view(b * c, 1, 1, k), groups: b * c);
        flat = F.conv2d(F.pad(flat, [0, 0, k / 2, k / 2], PaddingModes.Reflect), kernel.view(b * c, 1, k, 1), groups: b * c);
        return flat.view(b, c, x.shape[2], x.shape[3]);
    }
}
