using System.Text.Encodings.Web;
using System.Text.Json;

namespace TianGong.Server;

/// <summary>
/// How every response body is written: generated text (Chinese first) stays readable UTF-8 instead of \uXXXX
/// escapes. Safe here because responses are JSON or server-sent events, never embedded in HTML.
/// </summary>
internal static class ServerJson
{
    public static readonly JsonSerializerOptions Options = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
}
