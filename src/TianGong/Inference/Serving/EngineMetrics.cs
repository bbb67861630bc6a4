using System.Diagnostics.Metrics;

namespace TianGong.Inference.Serving;

/// <summary>
/// Counters of one serving engine, written by its scheduler and read by any thread. They are published as
/// System.Diagnostics.Metrics instruments on <see cref="Meter"/> (one meter per engine, so an exporter can pick this
/// engine's instruments by reference), and kept as a locked snapshot for code that reads them directly.
/// Totals and gauges are observable instruments read from the snapshot when collected; the time to first token is a
/// histogram recorded as it happens.
/// </summary>
public sealed class EngineMetrics : IDisposable
{
    /// <summary>
    /// The meter's name. Instruments follow OpenTelemetry's naming (<c>tiangong.requests</c>, unit "s"), which a
    /// Prometheus exporter writes as <c>tiangong_requests_total</c> and <c>tiangong_time_to_first_token_seconds</c>.
    /// </summary>
    public const string MeterName = "tiangong";

    /// <summary>Upper bounds (seconds) of the time-to-first-token histogram buckets; +Inf is implied.</summary>
    public static IReadOnlyList<double> TimeToFirstTokenBuckets { get; } = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

    private readonly object gate = new();
    private readonly long[] ttftCounts = new long[TimeToFirstTokenBuckets.Count + 1];
    private readonly Histogram<double> timeToFirstToken;
    private double ttftSum, busySeconds;
    private PhaseTimes phases = new(0, 0, 0, 0, 0);
    private long requests, promptTokens, completionTokens, ttftCount;
    private int queueDepth, batchSize;

    public EngineMetrics()
    {
        Meter = new Meter(MeterName);
        Meter.CreateObservableCounter("tiangong.requests", () => Read().Requests, description: "Generation requests accepted.");
        Meter.CreateObservableCounter("tiangong.prompt_tokens", () => Read().PromptTokens, description: "Prompt tokens of accepted requests.");
        Meter.CreateObservableCounter("tiangong.generation_tokens", () => Read().CompletionTokens, description: "Tokens generated.");
        Meter.CreateObservableGauge("tiangong.queue_depth", () => Read().QueueDepth, description: "Requests waiting for a batch slot.");
        Meter.CreateObservableGauge("tiangong.batch_size", () => Read().BatchSize, description: "Sequences decoding together.");
        Meter.CreateObservableGauge("tiangong.generation_tokens_per_second", () => Read().TokensPerSecond, description: "Tokens generated per second of forward-pass time.");
        timeToFirstToken = Meter.CreateHistogram("tiangong.time_to_first_token", unit: "s", description: "Time from submission to the first generated token.",
            tags: null, advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = TimeToFirstTokenBuckets });
    }

    /// <summary>This engine's instruments (and only this engine's).</summary>
    public Meter Meter { get; }

    public sealed record Snapshot(long Requests, long PromptTokens, long CompletionTokens, int QueueDepth, int BatchSize,
        IReadOnlyList<long> TimeToFirstTokenCounts, double TimeToFirstTokenSum, long TimeToFirstTokenCount, double BusySeconds)
    {
        /// <summary>Generated tokens per second of time the scheduler spent in forward passes.</summary>
        public double TokensPerSecond => BusySeconds > 0 ? CompletionTokens / BusySeconds : 0;
    }

    public Snapshot Read()
    {
        lock (gate)
            return new(requests, promptTokens, completionTokens, queueDepth, batchSize, [.. ttftCounts], ttftSum, ttftCount, busySeconds);
    }

    internal void Accepted(int prompt) { lock (gate) { requests++; promptTokens += prompt; } }
    internal void Generated(int tokens) { lock (gate) completionTokens += tokens; }
    internal void Load(int queue, int batch) { lock (gate) (queueDepth, batchSize) = (queue, batch); }
    internal void Busy(double seconds) { lock (gate) busySeconds += seconds; }

    /// <summary>
    /// Where the scheduler thread's time went, summed over its iterations: prompt prefill passes (with their first tokens),
    /// decode forward passes, choosing tokens (processors and sampling), and streaming them (detokenization, stop strings,
    /// the chunk handed to the request's channel). The serving benchmark prints it to show what a token costs besides the model.
    /// </summary>
    public sealed record PhaseTimes(double PrefillSeconds, double ForwardSeconds, double SampleSeconds, double EmitSeconds, long DecodeSteps)
    {
        public static PhaseTimes operator -(PhaseTimes a, PhaseTimes b) => new(a.PrefillSeconds - b.PrefillSeconds,
            a.ForwardSeconds - b.ForwardSeconds, a.SampleSeconds - b.SampleSeconds, a.EmitSeconds - b.EmitSeconds, a.DecodeSteps - b.DecodeSteps);
    }

    public PhaseTimes Phases { get { lock (gate) return phases; } }

    internal void AddPhases(double prefill, double forward, double sample, double emit, int decodeSteps)
    {
        lock (gate)
            phases = new(phases.PrefillSeconds + prefill, phases.ForwardSeconds + forward, phases.SampleSeconds + sample,
                phases.EmitSeconds + emit, phases.DecodeSteps + decodeSteps);
    }

    internal void FirstToken(double seconds)
    {
        lock (gate)
        {
            int bucket = 0;
            while (bucket < TimeToFirstTokenBuckets.Count && seconds > TimeToFirstTokenBuckets[bucket]) bucket++;
            ttftCounts[bucket]++;
            ttftSum += seconds;
            ttftCount++;
        }
        timeToFirstToken.Record(seconds);
    }

    public void Dispose() => Meter.Dispose();
}
