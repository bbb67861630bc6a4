using Microsoft.Extensions.Hosting;
using TianGong.Checkpoints;
using TianGong.Inference;
using TianGong.Inference.Serving;
using TianGong.Models;
using TianGong.Tokenizers;

namespace TianGong.Server;

/// <summary>
/// Loads the model in the background once the server listens (so /health can answer 503 meanwhile) and owns
/// the engine. Disposed after the server has stopped taking requests, so in-flight ones finish first.
/// A decoder gets the batching engine (every endpoint); an encoder (BERT) serves /v1/embeddings only.
/// </summary>
public sealed class ModelHost(ServerOptions options, Func<LoadedModel> load) : BackgroundService
{
    private volatile ServingEngine? engine;
    private volatile IEncoderModel? encoder;
    private readonly SemaphoreSlim encoderTurn = new(1, 1); // one encoder forward at a time, like the engine's single thread
    private LoadedModel? loaded;

    public ServingEngine? Engine => engine;

    public bool IsReady => engine is not null || encoder is not null;

    public string? LoadError { get; private set; }

    public ServingEngine RequireEngine() => engine
        ?? (encoder is not null
            ? throw new ApiError(400, $"'{options.Name}' is an encoder model: it serves /v1/embeddings only", code: "unsupported_for_model")
            : throw NotReady());

    /// <summary>Sentence vectors: mean-pooled last hidden states, from the encoder or from the decoder engine.</summary>
    public async Task<(ITextTokenizer Tokenizer, float[][] Vectors)> EmbedAsync(Func<ITextTokenizer, List<int[]>> inputs, CancellationToken cancel)
    {
        if (engine is { } e)
        {
            var ids = inputs(e.Tokenizer);
            return (e.Tokenizer, await e.EmbedAsync(ids, cancel));
        }
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

    private ApiError NotReady() =>
        new(503, LoadError is null ? "the model is still loading" : $"the model failed to load: {LoadError}", "server_error", code: "model_not_ready");

    protected override Task ExecuteAsync(CancellationToken stoppingToken) => Task.Run(() =>
    {
        try
        {
            loaded = load();
            var tokenizer = loaded.Tokenizer ?? throw new TianGongException($"{loaded.Directory}: serve needs a tokenizer (tokenizer.json, vocab.json + merges.txt or tokenizer.model)");
            if (loaded.Module is IEncoderModel encoderModel) encoder = encoderModel;
            else engine = new ServingEngine(loaded.AsCausalLM("serve"), tokenizer, options.Serving ?? new ServingOptions(), GenerationConfig.Read(loaded.Directory));
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
