using System.Text.Json;
using System.Text.Json.Serialization;

namespace TianGong.Models;

/// <summary>
/// Reads Hugging Face's <c>architectures</c> list as its first entry, the class the weights belong to, and writes it
/// back as a one-entry list. For families whose model_type covers several classes (bert: BertModel, BertForMaskedLM).
/// </summary>
public sealed class FirstArchitectureConverter : JsonConverter<string>
{
    public override string? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType == JsonTokenType.String) return reader.GetString();
        if (reader.TokenType != JsonTokenType.StartArray) throw new JsonException("expected a list of class names");
        string? first = null;
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            if (reader.TokenType != JsonTokenType.String) throw new JsonException("expected a list of class names");
            first ??= reader.GetString();
        }
        return first;
    }

    public override void Write(Utf8JsonWriter writer, string value, JsonSerializerOptions options)
    {
        writer.WriteStartArray();
        writer.WriteStringValue(value);
        writer.WriteEndArray();
    }
}
