using Microsoft.Extensions.Hosting;
using TorchSharp;
using TianGong.Checkpoints;
using TianGong.Inference;
using TianGong.Inference.Serving;
using TianGong.Models;
using TianGong.Tokenizers;
using TianGong.Vision;
using TianGong.Vision.Training;

namespace TianGong.Server;

/// <summary>
/// Loads the model in the background once the server listens (so /health can answer 503 meanwhile) and owns
/// the engine. Disposed after the server has stopped taking requests, so in-flight ones finish first.
/// A decoder gets the batching engine (every endpoint); an encoder (BERT) serves /v1/embeddings only, and so does an
/// image model (ViT, ResNet), whose inputs are images.
/// </summary>
public sealed class ModelHost(ServerOptions options, Func<LoadedModel> load) : BackgroundService
{
    private volatile ServingEngine? engine;
    private volatile IEncoderModel? encoder;
    private volatile IImageEncoder? imageEncoder;
    private ImageProcessor? imageProcessor;
    private readonly SemaphoreSlim encoderTurn = new(1, 1); // one encoder forward at a time, like the engine's single thread
    private LoadedModel? loaded;

    public ServingEngine? Engine => engine;

    public bool IsReady => engine is not null || encoder is not null || imageEncoder is not null;

    /// <summary>Whether the model takes images (a vision folder) rather than text.</summary>
    public bool TakesImages => imageEncoder is not null;

    public string? LoadError { get; private set; }

    public ServingEngine RequireEngine() => engine
        ?? (encoder is not null || imageEncoder is not null
            ? throw new ApiError(400, $"'{options.Name}' is an {(encoder is not null ? "encoder" : "image")} model: it serves /v1/embeddings only", code: "unsupported_for_model")
            : throw NotReady());

    /// <summary>Sentence vectors: mean-pooled last hidden states, from the encoder or from the decoder engine.</summary>
    public async Task<(ITextTokenizer Tokenizer, float[][] Vectors)> EmbedAsync(Func<ITextTokenizer, List<int[]>> inputs, CancellationToken cancel)
    {
        if (engine is { } e)
        {
            var ids = inputs(e.Tokenizer);
            return (e.Tokenizer, await e.EmbedAsync(ids, cancel));
        }
        if (imageEncoder is not null)
            throw ApiError.BadRequest($"'{options.Name}' is an image model: 'input' must be image data URLs (data:image/png;base64,...), not text", "input", "unsupported_input");
        if (encoder is not { } enc || loaded?.Tokenizer is not { } tokenizer) throw NotReady();
        var sequences = inputs(tokenizer);
        await encoderTurn.WaitAsync(cancel);
        try
        {
            return (tokenizer, await Task.Run(() => SentenceEmbedding.Embed(enc, sequences, Pooling.Mean).ToArray(), cancel));
        }
        finally
        {
            encoderTurn.Release();
        }
    }

    /// <summary>Image vectors: each encoded image decoded, preprocessed by the folder's preprocessor_config.json, mean-pooled as embed --image does.</summary>
    public async Task<float[][]> EmbedImagesAsync(IReadOnlyList<byte[]> images, CancellationToken cancel)
    {
        if (imageEncoder is not { } enc || imageProcessor is not { } processor)
            throw IsReady
                ? ApiError.BadRequest($"'{options.Name}' is a text model: 'input' must be text, not image data URLs", "input", "unsupported_input")
                : NotReady();
        await encoderTurn.WaitAsync(cancel);
        try
        {
            return await Task.Run(() =>
            {
                using var scope = torch.NewDisposeScope();
                var device = loaded!.Module.parameters().First().device;
                var pixels = ImageInputs.Stack(processor, images.Select((bytes, i) =>
                {
                    cancel.ThrowIfCancellationRequested();
                    return ImageInputs.Decode(bytes, enc.NumChannels, ImageDataUrl.MaxPixels, $"input[{i}]");
                }), "input").to(device);
                if (pixels.shape[1] != enc.NumChannels)
                    throw new TianGongException($"preprocessor_config.json makes {pixels.shape[1]}-channel pixel values, the model takes {enc.NumChannels}");
                return ImageEmbedding.Embed(enc, pixels, Pooling.Mean).ToArray();
            }, cancel);
        }
        finally
        {
            encoderTurn.Release();
        }
    }

    private ApiError NotReady() =>
        new(503, LoadError is null ? "the model is still loading" : $"the model failed to load: {LoadError}", "server_error", code: "model_not_ready");

    protected override Task ExecuteAsync(CancellationToken stoppingToken) => Task.Run(() =>
    {
        try
        {
            loaded = load();
            if (options.Adapters is { Count: > 0 }) loaded.AsCausalLM("serve --adapter NAME=DIR"); // LoRA adapters are served on decoders only
            if (loaded.Module is IImageEncoder vision)
            {
                imageProcessor = VisionEvaluation.ProcessorFor(loaded.Directory, vision);
                imageEncoder = vision;
                return;
            }
            var tokenizer = loaded.Tokenizer ?? throw new TianGongException($"{loaded.Directory}: serve needs a tokenizer (tokenizer.json, vocab.json + merges.txt or tokenizer.model)");
            if (loaded.Module is IEncoderModel encoderModel) encoder = encoderModel;
            else
            {
                var model = loaded.AsCausalLM("serve");
                // Named LoRA adapters share the base weights and one batch (MultiLoraLinear); a misfit fails the load here.
                var adapters = options.Adapters is { Count: > 0 } named ? Tuning.MultiLoraAdapters.Load(model, named, options.Name) : null;
                engine = new ServingEngine(model, tokenizer, options.Serving ?? new ServingOptions(), GenerationConfig.Read(loaded.Directory), adapters);
            }
        }
        catch (TianGongException e)
        {
            LoadError = e.Message;
            Console.Error.WriteLine($"error: {e.Message}");
        }
    }, stoppingToken);

    public override void Dispose()
    {
        engine?.Dispose();
        loaded?.Dispose();
        encoderTurn.Dispose();
        base.Dispose();
    }
}
