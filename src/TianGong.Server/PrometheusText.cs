using System.Diagnostics.Metrics;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using TianGong.Inference.Serving;

namespace TianGong.Server;

/// <summary>
/// /metrics: the serving engine's System.Diagnostics.Metrics instruments (<see cref="EngineMetrics"/>), exported in
/// Prometheus' text format by OpenTelemetry's Prometheus exporter.
/// Each server exports only the engine it created: several servers in one process (the tests) each create a meter
/// named "tiangong", and a name filter would mix their numbers. The engine is built on the model host's loading
/// thread right after the load function returns, so the load function marks that flow as this server's
/// (an AsyncLocal, which flows with the thread's execution context and no further), and the view keeps the
/// instruments published under that mark.
/// </summary>
internal static class PrometheusText
{
    private static readonly AsyncLocal<object?> LoadingServer = new();

    /// <summary>Wraps the model host's load function so that the engine built after it is recognised as this server's.</summary>
    public static Func<T> MarkLoading<T>(object server, Func<T> load) => () =>
    {
        LoadingServer.Value = server;
        return load();
    };

    public static void AddServices(IServiceCollection services, object server)
    {
        services.AddOpenTelemetry()
            .ConfigureResource(resource => resource.AddService("tiangong"))
            .WithMetrics(metrics => metrics
                .AddMeter(EngineMetrics.MeterName)
                .AddView(instrument => IsOwnedBy(instrument, server) ? null : MetricStreamConfiguration.Drop)
                .AddPrometheusExporter());
    }

    public static void MapEndpoint(WebApplication app) => app.MapPrometheusScrapingEndpoint("/metrics");

    private static bool IsOwnedBy(Instrument instrument, object server) =>
        instrument.Meter.Name == EngineMetrics.MeterName && ReferenceEquals(LoadingServer.Value, server);
}
