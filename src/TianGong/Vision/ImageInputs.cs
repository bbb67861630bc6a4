using SkiaSharp;

namespace TianGong.Vision;

/// <summary>
/// Encoded images (files or bytes from a request) turned into the pixel_values batch a vision folder takes: each image
/// decoded at the model's channel count and preprocessed on its own (sizes may differ), then stacked. Shared by
/// <c>embed --image</c> and the server's /v1/embeddings so both feed the model the same tensor.
/// </summary>
public static class ImageInputs
{
    /// <summary>Decodes PNG/JPEG/... bytes to uint8 (channels, H, W), refusing images over <paramref name="maxPixels"/> before their pixels are decoded.</summary>
    public static Tensor Decode(byte[] bytes, int channels, long maxPixels, string where)
    {
        using var data = SKData.CreateCopy(bytes);
        using var codec = SKCodec.Create(data) ?? throw new TianGongException($"{where}: not an image SkiaSharp can decode (PNG, JPEG, BMP, GIF, WebP)");
        long pixels = (long)codec.Info.Width * codec.Info.Height;
        if (codec.Info.Width <= 0 || codec.Info.Height <= 0 || pixels > maxPixels)
            throw new TianGongException($"{where}: the image is {codec.Info.Width}×{codec.Info.Height}, over the limit of {maxPixels} pixels");
        return ImageFolder.Decode(codec, channels, where);
    }

    /// <summary>Preprocesses each decoded (C, H, W) image and stacks them to (B, C', H', W'); images that preprocess to different sizes are an error.</summary>
    public static Tensor Stack(ImageProcessor processor, IEnumerable<Tensor> images, string what)
    {
        using var scope = NewDisposeScope();
        var batch = images.Select(processor.Preprocess).ToList();
        if (batch.Count == 0) throw new TianGongException($"{what}: no images");
        var shapes = batch.Select(b => string.Join("×", b.shape.Skip(1))).Distinct().ToList();
        if (shapes.Count > 1)
            throw new TianGongException($"{what}: the images preprocess to different sizes ({string.Join(", ", shapes)}); the folder's preprocessor_config.json does not resize");
        return cat(batch, 0).MoveToOuterDisposeScope();
    }
}
