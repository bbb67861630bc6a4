using TianGong.Inference.Serving;

namespace TianGong.Server;

/// <summary>
/// How `tiangong serve` runs. Binds loopback unless told otherwise; with an ApiKey every /v1 route needs
/// `Authorization: Bearer KEY` (/health and /metrics stay open for probes and scrapers).
/// </summary>
public sealed record ServerOptions(
    string ModelDirectory,
    string Host = "127.0.0.1",
    int Port = 8080,
    string? ApiKey = null,
    ServingOptions? Serving = null,
    long MaxBodyBytes = 1 << 20,
    string? ModelName = null)
{
    /// <summary>The id clients pass as "model": the folder's name unless given.</summary>
    public string Name => ModelName ?? Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(ModelDirectory)));
}
