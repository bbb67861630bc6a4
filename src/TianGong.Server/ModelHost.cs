using Microsoft.Extensions.Hosting;
using TianGong.Checkpoints;
using TianGong.Inference.Serving;

namespace TianGong.Server;

/// <summary>
/// Loads the model in the background once the server listens (so /health can answer 503 meanwhile) and owns
/// the engine. Disposed after the server has stopped taking requests, so in-flight ones finish first.
/// </summary>
public sealed class ModelHost(ServerOptions options, Func<LoadedModel> load) : BackgroundService
{
    private volatile ServingEngine? engine;
    private LoadedModel? loaded;

    public ServingEngine? Engine => engine;

    public string? LoadError { get; private set; }

    public ServingEngine RequireEngine() => engine
        ?? throw new ApiError(503, LoadError is null ? "the model is still loading" : $"the model failed to load: {LoadError}", "server_error", code: "model_not_ready");

    protected override Task ExecuteAsync(CancellationToken stoppingToken) => Task.Run(() =>
    {
        try
        {
            loaded = load();
            var tokenizer = loaded.Tokenizer ?? throw new TianGongException($"{loaded.Directory}: serve needs {ModelFolder.TokenizerFile}");
            engine = new ServingEngine(loaded.AsCausalLM("serve"), tokenizer, options.Serving ?? new ServingOptions());
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
        base.Dispose();
    }
}
