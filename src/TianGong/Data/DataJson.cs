using System.Text.Json.Serialization;

namespace TianGong.Data;

/// <summary>One <c>chinese-poetry</c> entry; ci carry <c>rhythmic</c> (the tune) where poems carry <c>title</c>.</summary>
internal sealed record PoemEntry(
    [property: JsonPropertyName("title")] string? Title,
    [property: JsonPropertyName("rhythmic")] string? Rhythmic,
    [property: JsonPropertyName("paragraphs")] string?[]? Paragraphs);

/// <summary>
/// Source-generated JSON metadata for the data files, so reading them works in trimmed or AOT hosts
/// (where reflection-based System.Text.Json is switched off) as well as in ordinary ones.
/// </summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = true)]
[JsonSerializable(typeof(TokenIndex))]
[JsonSerializable(typeof(PoemEntry[]))]
internal sealed partial class DataJson : JsonSerializerContext;
