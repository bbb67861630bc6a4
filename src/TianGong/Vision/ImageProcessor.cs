using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Vision;

/// <summary>
/// transformers' <c>size</c>: either an exact (height, width) or the length the shorter edge is resized to
/// (ConvNext style), never both.
/// </summary>
public sealed record ImageSize(int? Height = null, int? Width = null, int? ShortestEdge = null);

/// <summary>
/// <c>preprocessor_config.json</c> as ViTImageProcessor and ConvNextImageProcessor read it (ResNet checkpoints use the
/// latter). Fields left out take the defaults of the processor type it names; fields we do not model are skipped,
/// as transformers keeps them as attributes.
/// </summary>
public sealed record ImageProcessorConfig(
    string? ImageProcessorType = null,
    string? FeatureExtractorType = null,
    bool? DoResize = null,
    ImageSize? Size = null,
    int? Resample = null,
    bool? DoRescale = null,
    double? RescaleFactor = null,
    bool? DoNormalize = null,
    IReadOnlyList<double>? ImageMean = null,
    IReadOnlyList<double>? ImageStd = null,
    double? CropPct = null)
{
    public const string FileName = "preprocessor_config.json";

    public static ImageProcessorConfig Load(string path) => Parse(ConfigJson.ReadFile(path), path);

    /// <summary>Writes the file transformers' AutoImageProcessor reads (unset fields left out: they take the type's defaults).</summary>
    public void Save(string path) => ConfigJson.WriteAtomically(path, ConfigJson.ToNode(this).ToJsonString(ConfigJson.Options));

    public static ImageProcessorConfig Parse(JsonNode node, string where)
    {
        // transformers accepts a bare number for size (a square for ViT, the shortest edge for ConvNext).
        if (node is JsonObject obj && obj["size"] is JsonValue number && number.TryGetValue<int>(out int n))
        {
            obj = (JsonObject)obj.DeepClone();
            bool convNext = (obj["image_processor_type"] ?? obj["feature_extractor_type"])?.GetValue<string>()?.StartsWith("ConvNext") == true;
            obj["size"] = convNext ? new JsonObject { ["shortest_edge"] = n } : new JsonObject { ["height"] = n, ["width"] = n };
            node = obj;
        }
        return ConfigJson.Read<ImageProcessorConfig>(node, where, strict: false);
    }
}

/// <summary>
/// Turns images into the <c>pixel_values</c> a vision model takes: resize (and ConvNext's center crop), rescale to
/// [0, 1], normalise per channel. Resizing is torch's bilinear / bicubic interpolation with antialiasing on float
/// pixels, as transformers' fast (torchvision) processors do, so results are within a rounding step of PIL's.
/// </summary>
public sealed class ImageProcessor
{
    private enum Kind { ViT, ConvNext }

    private readonly Kind kind;

    public bool DoResize { get; }
    public ImageSize Size { get; }
    public int Resample { get; }
    public bool DoRescale { get; }
    public double RescaleFactor { get; }
    public bool DoNormalize { get; }
    public IReadOnlyList<double> ImageMean { get; }
    public IReadOnlyList<double> ImageStd { get; }
    public double CropPct { get; }

    // PIL's resampling codes, which preprocessor_config.json stores.
    private const int Nearest = 0, Bilinear = 2, Bicubic = 3;
    private static readonly double[] ImagenetMean = [0.485, 0.456, 0.406], ImagenetStd = [0.229, 0.224, 0.225];
    private static readonly double[] HalfMean = [0.5, 0.5, 0.5], HalfStd = [0.5, 0.5, 0.5];

    public ImageProcessor(ImageProcessorConfig config, string where = ImageProcessorConfig.FileName)
    {
        var type = config.ImageProcessorType ?? config.FeatureExtractorType ?? "ViTImageProcessor";
        kind = type switch
        {
            "ViTImageProcessor" or "ViTImageProcessorFast" or "ViTFeatureExtractor" => Kind.ViT,
            "ConvNextImageProcessor" or "ConvNextImageProcessorFast" or "ConvNextFeatureExtractor" => Kind.ConvNext,
            _ => throw new TianGongException($"{where}: image_processor_type: supported are ViTImageProcessor and ConvNextImageProcessor, got '{type}'"),
        };
        DoResize = config.DoResize ?? true;
        Size = config.Size ?? (kind == Kind.ViT ? new ImageSize(224, 224) : new ImageSize(ShortestEdge: 384));
        Resample = config.Resample ?? Bilinear;
        DoRescale = config.DoRescale ?? true;
        RescaleFactor = config.RescaleFactor ?? 1 / 255.0;
        DoNormalize = config.DoNormalize ?? true;
        ImageMean = config.ImageMean ?? (kind == Kind.ViT ? HalfMean : ImagenetMean);
        ImageStd = config.ImageStd ?? (kind == Kind.ViT ? HalfStd : ImagenetStd);
        CropPct = config.CropPct ?? 224 / 256.0;
        Validate(where);
    }

    public static ImageProcessor Load(string path) => new(ImageProcessorConfig.Load(path), path);

    /// <summary>The folder's preprocessor_config.json, or null when it has none.</summary>
    public static ImageProcessor? FromFolder(string dir)
    {
        var path = Path.Combine(dir, ImageProcessorConfig.FileName);
        return File.Exists(path) ? Load(path) : null;
    }

    private void Validate(string where)
    {
        void Fail(string message) => throw new TianGongException($"{where}: {message}");
        if (Size.ShortestEdge is { } edge)
        {
            if (Size.Height is not null || Size.Width is not null) Fail("size: give either height and width or shortest_edge, not both");
            if (kind == Kind.ViT) Fail("size: ViTImageProcessor needs height and width");
            if (edge <= 0) Fail($"size.shortest_edge: must be positive, got {edge}");
        }
        else if (Size.Height is not { } h || Size.Width is not { } w || h <= 0 || w <= 0)
            Fail("size: needs positive height and width (or shortest_edge)");
        if (Resample is not (Nearest or Bilinear or Bicubic)) Fail($"resample: supported are 0 (nearest), 2 (bilinear) and 3 (bicubic), got {Resample}");
        if (RescaleFactor <= 0 || double.IsNaN(RescaleFactor)) Fail($"rescale_factor: must be positive, got {RescaleFactor}");
        if (ImageMean.Count == 0 || ImageMean.Count != ImageStd.Count)
            Fail($"image_mean and image_std: need one value per channel each, got {ImageMean.Count} and {ImageStd.Count}");
        if (ImageStd.Any(s => s <= 0)) Fail("image_std: every value must be positive");
        if (CropPct is <= 0 or > 1) Fail($"crop_pct: must be in (0, 1], got {CropPct}");
    }

    /// <summary>
    /// images (B, C, H, W) or (C, H, W), uint8 or float on the 0..255 scale (when do_rescale) → float32 pixel_values
    /// (B, C', H', W'). Greyscale images are repeated to three channels when the mean has three, as do_convert_rgb does.
    /// </summary>
    public Tensor Preprocess(Tensor images)
    {
        using var scope = NewDisposeScope();
        var x = (images.dim() == 3 ? images.unsqueeze(0) : images).to(ScalarType.Float32);
        if (x.dim() != 4) throw new TianGongException($"images: expected (B, C, H, W) or (C, H, W), got ({string.Join(", ", images.shape)})");
        int channels = (int)x.shape[1];
        if (channels == 1 && ImageMean.Count == 3) x = x.expand(-1, 3, -1, -1);
        else if (channels != ImageMean.Count)
            throw new TianGongException($"images: {channels} channels, but image_mean has {ImageMean.Count} values");
        if (DoResize) x = ResizeAndCrop(x);
        if (DoRescale) x = x * RescaleFactor;
        if (DoNormalize)
        {
            var mean = tensor(ImageMean.Select(v => (float)v).ToArray()).view(1, -1, 1, 1);
            var std = tensor(ImageStd.Select(v => (float)v).ToArray()).view(1, -1, 1, 1);
            x = (x - mean) / std;
        }
        return x.contiguous().MoveToOuterDisposeScope();
    }

    private Tensor ResizeAndCrop(Tensor x)
    {
        if (Size.ShortestEdge is not { } edge) return Resize(x, Size.Height!.Value, Size.Width!.Value);
        if (edge >= 384) return Resize(x, edge, edge);                                       // ConvNext warps large sizes
        // ConvNext below 384: resize the shorter edge to edge / crop_pct, keeping the aspect ratio, then crop the center.
        long h = x.shape[2], w = x.shape[3];
        int shorter = (int)(edge / CropPct);
        var (newH, newW) = h <= w ? (shorter, (int)(shorter * (double)w / h)) : ((int)(shorter * (double)h / w), shorter);
        x = Resize(x, newH, newW);
        long top = (newH - edge) / 2, left = (newW - edge) / 2;
        return x[.., .., TensorIndex.Slice(top, top + edge), TensorIndex.Slice(left, left + edge)];
    }

    private Tensor Resize(Tensor x, long height, long width)
    {
        if (x.shape[2] == height && x.shape[3] == width) return x;
        var mode = Resample switch { Nearest => InterpolationMode.Nearest, Bicubic => InterpolationMode.Bicubic, _ => InterpolationMode.Bilinear };
        var y = F.interpolate(x, [height, width], mode: mode, align_corners: mode == InterpolationMode.Nearest ? null : false,
            antialias: mode != InterpolationMode.Nearest);
        // Bicubic overshoots; PIL clips to the pixel range.
        return mode == InterpolationMode.Bicubic ? y.clamp(0, 255) : y;
    }
}
