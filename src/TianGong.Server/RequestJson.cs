using System.Text.Json;

namespace TianGong.Server;

/// <summary>Typed reads from a request body, each failure naming the parameter as OpenAI's errors do.</summary>
internal sealed class RequestJson(JsonElement root)
{
    public JsonElement Root { get; } = root.ValueKind == JsonValueKind.Object ? root
        : throw ApiError.BadRequest("the request body must be a JSON object");

    public bool Has(string name) => Root.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null;

    public JsonElement Get(string name) => Root.TryGetProperty(name, out var v) ? v : default;

    public string? String(string name) => Get(name) switch
    {
        { ValueKind: JsonValueKind.String } v => Text(v, name),
        { ValueKind: JsonValueKind.Null or JsonValueKind.Undefined } => null,
        _ => throw ApiError.BadRequest($"'{name}' must be a string", name),
    };

    /// <summary>
    /// A JSON string's text. JSON can spell what .NET refuses to decode (an escaped lone surrogate "\ud800", invalid UTF-8
    /// bytes inside a string): System.Text.Json then throws InvalidOperationException, which here is the client's 400.
    /// </summary>
    public static string Text(JsonElement value, string? param)
    {
        try { return value.GetString()!; }
        catch (InvalidOperationException)
        {
            throw ApiError.BadRequest($"'{param ?? "body"}' holds a string that is not valid Unicode (a lone surrogate or invalid UTF-8)", param, "invalid_json");
        }
    }

    public string RequiredString(string name) => String(name) ?? throw ApiError.BadRequest($"'{name}' is required", name);

    public double Number(string name, double fallback, double min, double max)
    {
        var v = Get(name);
        if (v.ValueKind is JsonValueKind.Null or JsonValueKind.Undefined) return fallback;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out double d)) throw ApiError.BadRequest($"'{name}' must be a number", name);
        if (d < min || d > max) throw ApiError.BadRequest($"'{name}' must be between {min} and {max}, got {d}", name);
        return d;
    }

    public int? Integer(string name, int min, int max)
    {
        var v = Get(name);
        if (v.ValueKind is JsonValueKind.Null or JsonValueKind.Undefined) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out long l)) throw ApiError.BadRequest($"'{name}' must be an integer", name);
        if (l < min || l > max) throw ApiError.BadRequest($"'{name}' must be between {min} and {max}, got {l}", name);
        return (int)l;
    }

    public long? Long(string name)
    {
        var v = Get(name);
        if (v.ValueKind is JsonValueKind.Null or JsonValueKind.Undefined) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out long l)) throw ApiError.BadRequest($"'{name}' must be an integer", name);
        return l;
    }

    public bool Bool(string name, bool fallback = false) => Get(name).ValueKind switch
    {
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        JsonValueKind.Null or JsonValueKind.Undefined => fallback,
        _ => throw ApiError.BadRequest($"'{name}' must be a boolean", name),
    };

    /// <summary>OpenAI's `stop`: a string or an array of up to 4 strings.</summary>
    public IReadOnlyList<string> Stop()
    {
        var v = Get("stop");
        List<string> stops = v.ValueKind switch
        {
            JsonValueKind.Null or JsonValueKind.Undefined => [],
            JsonValueKind.String => [Text(v, "stop")],
            JsonValueKind.Array when v.EnumerateArray().All(e => e.ValueKind == JsonValueKind.String) => [.. v.EnumerateArray().Select(e => Text(e, "stop"))],
            _ => throw ApiError.BadRequest("'stop' must be a string or an array of strings", "stop"),
        };
        if (stops.Count > 4) throw ApiError.BadRequest("'stop' takes at most 4 sequences", "stop");
        if (stops.Any(s => s.Length == 0)) throw ApiError.BadRequest("'stop' sequences must not be empty", "stop");
        return stops;
    }
}
