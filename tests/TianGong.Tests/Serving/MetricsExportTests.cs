namespace TianGong.Tests.Serving;

/// <summary>/metrics comes from System.Diagnostics.Metrics through OpenTelemetry's Prometheus exporter, one engine per server.</summary>
public class MetricsExportTests
{
    [Fact]
    public async Task Two_servers_in_one_process_each_export_only_their_own_engine()
    {
        await using var busy = await TestServer.Start();
        await using var idle = await TestServer.Start();
        for (int i = 0; i < 2; i++)
        {
            var (status, _) = await busy.Post("/v1/completions", new { model = "tiny-poet", prompt = "春", max_tokens = 2, seed = i });
            Assert.Equal(200, status);
        }

        var busyMetrics = await busy.Client.GetStringAsync("/metrics");
        var idleMetrics = await idle.Client.GetStringAsync("/metrics");
        Assert.Contains("tiangong_requests_total{otel_scope_name=\"tiangong\"} 2\n", busyMetrics);
        Assert.Contains("tiangong_generation_tokens_total{otel_scope_name=\"tiangong\"} 4\n", busyMetrics);
        Assert.Contains("tiangong_requests_total{otel_scope_name=\"tiangong\"} 0\n", idleMetrics);
        Assert.Contains("tiangong_time_to_first_token_seconds_count{otel_scope_name=\"tiangong\"} 2\n", busyMetrics);
        Assert.DoesNotContain("tiangong_time_to_first_token_seconds_count{otel_scope_name=\"tiangong\"} 2\n", idleMetrics);
        // The buckets are the engine's own, from the histogram's advice.
        Assert.Contains("tiangong_time_to_first_token_seconds_bucket{otel_scope_name=\"tiangong\",le=\"0.005\"}", busyMetrics);
        Assert.Contains("le=\"10\"", busyMetrics);
    }
}
