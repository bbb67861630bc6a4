using TianGong.Inference.Serving;

namespace TianGong.Server;

/// <summary>
/// How `tiangong serve` runs. Binds loopback unless told otherwise; with an ApiKey every /v1 route needs
/// `Authorization: Bearer KEY` (/health and /metrics stay open for probes and scrapers). Adapters are LoRA folders served
/// next to the base model under their own names (a request's "model" picks one).
/// </summary>
public sealed record ServerOptions(
    string ModelDirectory,
    string Host = "127.0.0.1",
    int Port = 8080,
    string? ApiKey = null,
    ServingOptions? Serving = null,
    long MaxBodyBytes = 1 << 20,
    string? ModelName = null,
    IReadOnlyList<Tuning.NamedAdapter>? Adapters = null)
{
    /// <summary>The id clients pass as "model": the folder's name unless given.</summary>
    public string Name => ModelName ?? Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(ModelDirectory)));

    /// <summary>
    /// The adapter a request's "model" names: null for the base model (its name, or no name where none is required);
    /// a name this server does not serve is OpenAI's and vLLM's 404 model_not_found.
    /// </summary>
    public string? AdapterFor(string? model) =>
        model is null || model == Name ? null
        : Adapters?.Any(a => a.Name == model) == true ? model
        : throw new ApiError(404, $"the model '{model}' does not exist (this server has: {string.Join(", ", [Name, .. (Adapters ?? []).Select(a => a.Name)])})",
            param: "model", code: "model_not_found");
}
