namespace TianGong.Inference.Serving;

/// <summary>Counters of one serving engine, written by its scheduler and read by any thread (e.g. a /metrics endpoint).</summary>
public sealed class EngineMetrics
{
    /// <summary>Upper bounds (seconds) of the time-to-first-token histogram buckets; +Inf is implied.</summary>
    public static IReadOnlyList<double> TimeToFirstTokenBuckets { get; } = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

    private readonly object gate = new();
    private readonly long[] ttftCounts = new long[TimeToFirstTokenBuckets.Count + 1];
    private double ttftSum, busySeconds;
    private long requests, promptTokens, completionTokens, ttftCount;
    private int queueDepth, batchSize;

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
    }
}
