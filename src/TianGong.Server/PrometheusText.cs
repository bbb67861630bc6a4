using System.Globalization;
using System.Text;
using TianGong.Inference.Serving;

namespace TianGong.Server;

/// <summary>Renders engine metrics in Prometheus' text exposition format (version 0.0.4).</summary>
internal static class PrometheusText
{
    public static string Render(EngineMetrics.Snapshot m)
    {
        var sb = new StringBuilder();
        void Metric(string name, string type, string help, double value)
        {
            sb.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n');
            sb.Append("# TYPE ").Append(name).Append(' ').Append(type).Append('\n');
            sb.Append(name).Append(' ').Append(Format(value)).Append('\n');
        }
        Metric("tiangong_requests_total", "counter", "Generation requests accepted.", m.Requests);
        Metric("tiangong_prompt_tokens_total", "counter", "Prompt tokens of accepted requests.", m.PromptTokens);
        Metric("tiangong_generation_tokens_total", "counter", "Tokens generated.", m.CompletionTokens);
        Metric("tiangong_queue_depth", "gauge", "Requests waiting for a batch slot.", m.QueueDepth);
        Metric("tiangong_batch_size", "gauge", "Sequences decoding together.", m.BatchSize);
        Metric("tiangong_generation_tokens_per_second", "gauge", "Tokens generated per second of forward-pass time.", m.TokensPerSecond);
        const string ttft = "tiangong_time_to_first_token_seconds";
        sb.Append($"# HELP {ttft} Time from submission to the first generated token.\n# TYPE {ttft} histogram\n");
        long cumulative = 0;
        for (int i = 0; i < m.TimeToFirstTokenCounts.Count; i++)
        {
            cumulative += m.TimeToFirstTokenCounts[i];
            var le = i < EngineMetrics.TimeToFirstTokenBuckets.Count ? Format(EngineMetrics.TimeToFirstTokenBuckets[i]) : "+Inf";
            sb.Append($"{ttft}_bucket{{le=\"{le}\"}} {cumulative}\n");
        }
        sb.Append($"{ttft}_sum {Format(m.TimeToFirstTokenSum)}\n{ttft}_count {m.TimeToFirstTokenCount}\n");
        return sb.ToString();
    }

    private static string Format(double v) => v.ToString("R", CultureInfo.InvariantCulture);
}
