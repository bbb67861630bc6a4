using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace TianGong;

/// <summary>
/// One way to read every JSON config in TianGong: snake_case keys onto immutable records, with errors that
/// name the file, the field and the problem. Strict reading (our own configs) also rejects unknown fields,
/// so a typo never silently falls back to a default; lenient reading (Hugging Face folders) skips them, as transformers does.
/// </summary>
public static class ConfigJson
{
    public static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
    };

    /// <summary>
    /// Parses a JSON file: a regular file of at most <see cref="RegularFile.MaxJsonBytes"/> (so a link to /dev/zero or
    /// a pipe is refused before reading), strict UTF-8.
    /// </summary>
    public static JsonNode ReadFile(string path)
    {
        var text = RegularFile.ReadText(path, RegularFile.MaxJsonBytes, "JSON file");
        try
        {
            return JsonNode.Parse(text, documentOptions: new JsonDocumentOptions
            {
                CommentHandling = JsonCommentHandling.Skip,
                AllowTrailingCommas = true,
            }) ?? throw new TianGongException($"{path}: empty JSON document");
        }
        catch (JsonException e)
        {
            throw new TianGongException($"{path}: not valid JSON ({e.Message})");
        }
    }

    /// <summary>Reads <paramref name="node"/> into <typeparamref name="T"/>; <paramref name="where"/> prefixes every error ("config.json: model").</summary>
    public static T Read<T>(JsonNode? node, string where, bool strict, params string[] ignoredKeys)
    {
        if (node is not JsonObject obj) throw new TianGongException($"{where}: expected a JSON object");
        var copy = (JsonObject)obj.DeepClone();
        foreach (var key in ignoredKeys) copy.Remove(key);
        if (strict) RejectUnknownFields<T>(copy, where);
        try
        {
            return copy.Deserialize<T>(Options) ?? throw new TianGongException($"{where}: null is not a valid value");
        }
        catch (JsonException e)
        {
            var field = e.Path is { Length: > 2 } p ? p[2..] : "(root)";
            throw new TianGongException($"{where}: field '{field}' has the wrong type ({FirstSentence(e.Message)})");
        }
    }

    /// <summary>What a JSON value is, for errors: "an array", "a number", "null", ...</summary>
    public static string KindOf(JsonNode? node) => node?.GetValueKind() switch
    {
        null or JsonValueKind.Null => "null",
        JsonValueKind.Array => "an array",
        JsonValueKind.Object => "an object",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        _ => "a boolean",
    };

    public static JsonObject ToNode<T>(T value) => (JsonObject)JsonSerializer.SerializeToNode(value, Options)!;

    /// <summary>Writes text through <see cref="AtomicFile"/>, so readers never see half a file.</summary>
    public static void WriteAtomically(string path, string text)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        AtomicFile.Write(path, stream =>
        {
            using var writer = new StreamWriter(stream, leaveOpen: true);
            writer.Write(text);
        });
    }

    public static IReadOnlyList<string> KnownFields<T>() =>
        typeof(T).GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Where(p => p.GetCustomAttribute<JsonIgnoreAttribute>() is null && (p.SetMethod is not null || HasConstructorParameter(typeof(T), p.Name)))
            .Select(p => p.GetCustomAttribute<JsonPropertyNameAttribute>()?.Name ?? JsonNamingPolicy.SnakeCaseLower.ConvertName(p.Name))
            .ToList();

    private static void RejectUnknownFields<T>(JsonObject obj, string where)
    {
        var known = KnownFields<T>();
        foreach (var (key, _) in obj)
            if (!known.Contains(key))
                throw new TianGongException($"{where}: unknown field '{key}' (known fields: {string.Join(", ", known.Order())})");
    }

    private static bool HasConstructorParameter(Type type, string propertyName) =>
        type.GetConstructors().Any(c => c.GetParameters().Any(p => string.Equals(p.Name, propertyName, StringComparison.OrdinalIgnoreCase)));

    private static string FirstSentence(string message)
    {
        int dot = message.IndexOf(". ", StringComparison.Ordinal);
        return dot > 0 ? message[..dot] : message;
    }
}
