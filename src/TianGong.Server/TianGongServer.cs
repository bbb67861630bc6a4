using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using TianGong.Checkpoints;
using TianGong.Inference.Serving;

namespace TianGong.Server;

/// <summary>`tiangong serve`: an OpenAI-compatible HTTP front for a <see cref="ServingEngine"/>.</summary>
public static class TianGongServer
{
    /// <summary>Builds (does not start) the server; <paramref name="load"/> replaces loading the model folder (tests).</summary>
    public static WebApplication Build(ServerOptions options, Func<LoadedModel>? load = null)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Services.Configure<HostOptions>(h => h.ShutdownTimeout = TimeSpan.FromSeconds(30));
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = options.MaxBodyBytes;
            if (options.Host == "localhost") k.ListenLocalhost(options.Port);
            else if (IPAddress.TryParse(options.Host, out var address)) k.Listen(address, options.Port);
            else throw new TianGongException($"--host: '{options.Host}' is not an IP address (or localhost)");
        });
        var metricsOwner = new object();
        var host = new ModelHost(options, PrometheusText.MarkLoading(metricsOwner, load ?? (() => ModelFolder.Load(options.ModelDirectory))));
        PrometheusText.AddServices(builder.Services, metricsOwner);
        builder.Services.ConfigureHttpJsonOptions(o => o.SerializerOptions.Encoder = ServerJson.Options.Encoder);
        builder.Services.AddSingleton(options);
        builder.Services.AddSingleton(host);
        builder.Services.AddHostedService(_ => host);

        var app = builder.Build();
        app.Use(async (context, next) =>
        {
            try
            {
                if (options.ApiKey is { } key && context.Request.Path.StartsWithSegments("/v1") && !Authorized(context.Request, key))
                    throw new ApiError(401, "missing or wrong API key (send 'Authorization: Bearer KEY')", code: "invalid_api_key");
                await next(context);
            }
            catch (Exception e) when (!context.Response.HasStarted)
            {
                await WriteError(context, e);
            }
        });
        OpenAiEndpoints.Map(app, host, options);
        app.MapGet("/health", () => !host.IsReady
            ? Results.Json(new { status = host.LoadError is null ? "loading" : "failed" }, statusCode: 503)
            : Results.Json(new { status = "ok" }));
        PrometheusText.MapEndpoint(app);
        app.MapFallback(context => throw new ApiError(404, $"no route {context.Request.Method} {context.Request.Path}", code: "not_found"));
        return app;
    }

    /// <summary>
    /// The loud warning for a server reachable from other machines with no API key (any address but loopback), as vLLM
    /// and Ollama users expect; null when the server is bound to loopback or guarded by a key.
    /// </summary>
    public static string? ExposedWithoutKey(ServerOptions options)
    {
        if (options.ApiKey is not null) return null;
        bool loopback = options.Host == "localhost" || IPAddress.TryParse(options.Host, out var address) && IPAddress.IsLoopback(address);
        if (loopback) return null;
        return $"WARNING: serving on {options.Host} WITHOUT an API key: anyone who can reach port {options.Port} can run this model\n"
            + "WARNING: and use this machine's CPU. Pass --api-key KEY (clients send 'Authorization: Bearer KEY'), or bind\n"
            + "WARNING: loopback (--host 127.0.0.1) behind a proxy that authenticates.";
    }

    /// <summary>Constant-time comparison, so response timing does not reveal how much of a guessed key was right.</summary>
    private static bool Authorized(HttpRequest request, string key)
    {
        var header = request.Headers.Authorization.ToString();
        const string scheme = "Bearer ";
        if (!header.StartsWith(scheme, StringComparison.OrdinalIgnoreCase)) return false;
        return CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(header[scheme.Length..].Trim()), Encoding.UTF8.GetBytes(key));
    }

    /// <summary>Every failure becomes an OpenAI error object with a 4xx status; a 500 means a bug, and still has the same shape.</summary>
    private static Task WriteError(HttpContext context, Exception e)
    {
        var error = e switch
        {
            ApiError api => api,
            BadHttpRequestException { StatusCode: 413 } => new ApiError(413, "the request body is too large", code: "request_too_large"),
            BadHttpRequestException bad => new ApiError(bad.StatusCode, bad.Message),
            JsonException json => ApiError.BadRequest($"malformed JSON: {json.Message}", code: "invalid_json"),
            // System.Text.Json refuses to decode text JSON can spell (lone surrogates, invalid UTF-8): a bad request, not a bug.
            InvalidOperationException { Source: "System.Text.Json" } text => ApiError.BadRequest($"malformed JSON: {text.Message}", code: "invalid_json"),
            EngineBusyException busy => new ApiError(429, busy.Message, "rate_limit_error", code: "server_busy"),
            TianGongException tg => ApiError.BadRequest(tg.Message, ParamOf(tg.Message)),
            OperationCanceledException when context.RequestAborted.IsCancellationRequested => new ApiError(499, "client closed the request"),
            _ => new ApiError(500, "internal error", "server_error"),
        };
        if (error.Status == 500) Console.Error.WriteLine($"internal error on {context.Request.Method} {context.Request.Path}: {e}");
        if (error.Status == 429) context.Response.Headers.RetryAfter = "1";
        context.Response.StatusCode = error.Status;
        context.Response.ContentType = "application/json";
        return context.Response.WriteAsync(error.ToJson().ToJsonString(ServerJson.Options), context.RequestAborted);
    }

    // Engine errors start with the field they are about ("max_tokens: ..."), which is OpenAI's `param`.
    private static string? ParamOf(string message) =>
        message.IndexOf(':') is > 0 and var at && !message[..at].Contains(' ') ? message[..at] : null;
}
