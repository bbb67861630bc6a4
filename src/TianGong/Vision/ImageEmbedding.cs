using TianGong.Checkpoints;
using TianGong.Models;

namespace TianGong.Vision;

/// <summary>One vector per image from any <see cref="IImageEncoder"/>, pooled as the caller asks (the image side of embed).</summary>
public static class ImageEmbedding
{
    /// <summary>The tensor name Hugging Face image processors give their output, and that --pixel-values files hold.</summary>
    public const string PixelValuesName = "pixel_values";

    /// <summary>
    /// (B, C) from an encoder's output: pooler = the model's own pooled output (ViT: dense + tanh on [CLS]; ResNet:
    /// the global average, flattened); cls = ViT's final [CLS] state; mean = the average over tokens or positions.
    /// </summary>
    public static Tensor Pool(EncoderOutput output, Pooling pooling)
    {
        var hidden = output.LastHiddenState;
        return pooling switch
        {
            Pooling.Pooler => output.PoolerOutput?.flatten(1)
                ?? throw new TianGongException("pooling 'pooler': this model has no pooler layer (ViTForImageClassification; use cls or mean)"),
            Pooling.Cls when hidden.dim() == 3 => hidden.select(1, 0).clone(),
            Pooling.Cls => throw new TianGongException("pooling 'cls': a convolutional model has no [CLS] token (use pooler or mean)"),
            Pooling.Mean => hidden.dim() == 4 ? hidden.mean([2, 3]) : hidden.mean([1]),
            _ => throw new TianGongException($"pooling: unknown value {pooling}"),
        };
    }

    /// <summary>Embeds a batch of pixel values (B, C, H, W) without gradient: one float vector per image.</summary>
    public static List<float[]> Embed(IImageEncoder encoder, Tensor pixelValues, Pooling pooling)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var output = encoder.EncodeImages(pixelValues);
        var pooled = Pool(output, pooling).to(ScalarType.Float32).contiguous();              // (B, C)
        return Enumerable.Range(0, (int)pooled.shape[0]).Select(b => pooled[b].data<float>().ToArray()).ToList();
    }

    /// <summary>The <c>pixel_values</c> tensor (B, C, H, W) of a safetensors file, as float32.</summary>
    public static Tensor LoadPixelValues(string path)
    {
        if (!File.Exists(path)) throw new TianGongException($"{path}: file not found");
        using var file = SafeTensorsFile.Open(path);
        if (!file.Contains(PixelValuesName))
            throw new TianGongException($"{path}: no tensor named '{PixelValuesName}' (found: {string.Join(", ", file.Keys)})");
        using var values = file.Read(PixelValuesName);
        if (values.dim() != 4) throw new TianGongException($"{path}: '{PixelValuesName}' must be (B, C, H, W), got ({string.Join(", ", values.shape)})");
        return values.to(ScalarType.Float32).clone();
    }
}
