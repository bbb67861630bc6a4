using System.Globalization;
using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;
using TianGong.Models;
using TianGong.Vision;
using TianGong.Vision.Training;

namespace TianGong.Cli.Commands;

/// <summary>The image side of <c>embed</c>: pooled vectors of image files or of a pixel_values tensor, and logits for classification folders.</summary>
internal static class ImageEmbeddingOutput
{
    public static int Print(LoadedModel loaded, string[] imageFiles, string? pixelFile, Pooling pooling, bool json)
    {
        var encoder = loaded.AsImageEncoder("embed --image/--pixel-values");
        var device = loaded.Module.parameters().First().device;
        using var pixels = (pixelFile is not null ? ImageEmbedding.LoadPixelValues(pixelFile) : Preprocess(loaded, encoder, imageFiles)).to(device);
        if (pixels.shape[1] != encoder.NumChannels)
            throw new TianGongException($"pixel values have {pixels.shape[1]} channels, the model takes {encoder.NumChannels}");
        var vectors = ImageEmbedding.Embed(encoder, pixels, pooling);
        List<float[]>? logits = null;
        if (encoder is IImageClassifier classifier)
        {
            using var _ = no_grad();
            using var scores = classifier.Classify(pixels).to(ScalarType.Float32).cpu();
            logits = Enumerable.Range(0, (int)scores.shape[0]).Select(b => scores[b].data<float>().ToArray()).ToList();
        }
        var modeName = pooling.ToString().ToLowerInvariant();
        static JsonArray Rows(List<float[]> rows) => new(rows.Select(v => (JsonNode)new JsonArray(v.Select(x => (JsonNode)x).ToArray())).ToArray());
        if (json)
        {
            var output = new JsonObject { ["embeddings"] = Rows(vectors), ["dim"] = vectors[0].Length, ["pooling"] = modeName };
            if (logits is not null) output["logits"] = Rows(logits);
            Console.WriteLine(output.ToJsonString());
            return 0;
        }
        Console.Error.WriteLine($"{vectors.Count} vector(s) of dim {vectors[0].Length}, pooling {modeName}");
        foreach (var v in vectors) Console.WriteLine(string.Join(' ', v.Select(x => x.ToString("R", CultureInfo.InvariantCulture))));
        return 0;
    }

    /// <summary>Each file decoded at the model's channel count and preprocessed on its own (sizes may differ), then stacked.</summary>
    private static Tensor Preprocess(LoadedModel loaded, IImageEncoder encoder, string[] files)
    {
        var processor = VisionEvaluation.ProcessorFor(loaded.Directory, encoder);
        using var scope = NewDisposeScope();
        return ImageInputs.Stack(processor, files.Select(f =>
        {
            if (!File.Exists(f)) throw new TianGongException($"{f}: image file not found");
            return ImageFolder.Read(f, encoder.NumChannels);
        }), "--image").MoveToOuterDisposeScope();
    }
}
