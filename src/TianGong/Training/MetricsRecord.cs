using System.Text.Json.Serialization;

namespace TianGong.Training;

/// <summary>
/// One line of <c>metrics.jsonl</c>: what a training step (and, every so often, an evaluation) measured; <c>metrics</c> holds
/// the loss function's own named scalars (e.g. an auxiliary loss), absent when it has none.
/// </summary>
public sealed record MetricsRecord(
    [property: JsonPropertyName("step")] long Step,
    [property: JsonPropertyName("train_loss")] double TrainLoss,
    [property: JsonPropertyName("val_loss")] double? ValLoss = null,
    [property: JsonPropertyName("val_perplexity")] double? ValPerplexity = null,
    [property: JsonPropertyName("lr")] double? LearningRate = null,
    [property: JsonPropertyName("tokens_per_s")] double? TokensPerSecond = null,
    [property: JsonPropertyName("elapsed_s")] double? ElapsedSeconds = null,
    [property: JsonPropertyName("metrics")] IReadOnlyDictionary<string, double>? Metrics = null);
