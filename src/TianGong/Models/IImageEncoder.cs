namespace TianGong.Models;

/// <summary>
/// A vision backbone (ViT, ResNet): pixel values (B, C, H, W) in, the family's last hidden state and pooled output
/// out, with the shapes transformers gives them (ViT: (B, 1 + patches, C) and (B, C); ResNet: (B, C, h, w) and
/// (B, C, 1, 1)). Commands that embed, probe or pretrain images rely only on this, so they never ask which family they hold.
/// </summary>
public interface IImageEncoder
{
    IModelConfig Config { get; }

    /// <summary>Channels, height and width the model takes (ViT's patch grid is fixed by image_size; ResNet takes any size).</summary>
    int NumChannels { get; }

    /// <summary>The length of <see cref="Features"/>: what a classification head on this backbone reads.</summary>
    int FeatureSize { get; }

    EncoderOutput EncodeImages(Tensor pixelValues);

    /// <summary>
    /// One vector (B, FeatureSize) per image, the one the family's own classification head reads: ViT's final-layernormed
    /// [CLS] state, ResNet's globally average-pooled last stage. Linear probes and contrastive heads sit on this.
    /// </summary>
    Tensor Features(Tensor pixelValues);
}

/// <summary>A backbone with its classification head: logits (B, num_labels).</summary>
public interface IImageClassifier : IImageEncoder
{
    int NumLabels { get; }

    Tensor Classify(Tensor pixelValues);
}
