using System.Text.Json.Serialization;

namespace TianGong.Data;

/// <summary>
/// Source-generated JSON metadata for the data files, so reading them works in trimmed or AOT hosts
/// (where reflection-based System.Text.Json is switched off) as well as in ordinary ones.
/// </summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = true)]
[JsonSerializable(typeof(TokenIndex))]
internal sealed partial class DataJson : JsonSerializerContext;
