using System.Buffers;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using TianGong.Inference;
using TianGong.Inference.Serving;
using TianGong.Poetry;
using TianGong.Tokenizers;

namespace TianGong.Server;

/// <summary>The /v1 routes, in the request and response shapes of OpenAI's API (so its SDKs work unchanged).</summary>
internal static class OpenAiEndpoints
{
    private const int MaxChoices = 16;

    public static void Map(WebApplication app, ModelHost host, ServerOptions options)
    {
        // The base model, then each LoRA adapter with its base as "parent", as vLLM lists them.
        app.MapGet("/v1/models", () => Results.Json(new JsonObject
        {
            ["object"] = "list",
            ["data"] = new JsonArray([new JsonObject { ["id"] = options.Name, ["object"] = "model", ["created"] = 0, ["owned_by"] = "tiangong" },
                .. (options.Adapters ?? []).Select(a => (JsonNode)new JsonObject
                    { ["id"] = a.Name, ["object"] = "model", ["created"] = 0, ["owned_by"] = "tiangong", ["parent"] = options.Name })]),
        }));
        app.MapPost("/v1/completions", context => Completions(context, host, options, chat: false));
        app.MapPost("/v1/chat/completions", context => Completions(context, host, options, chat: true));
        app.MapPost("/v1/poems", context => Poems(context, host, options));
        app.MapPost("/v1/embeddings", context => Embeddings(context, host, options));
    }

    private static async Task<RequestJson> ReadBody(HttpContext context, ServerOptions options, bool modelRequired = true)
    {
        JsonDocument doc;
        try { doc = await JsonDocument.ParseAsync(context.Request.Body, cancellationToken: context.RequestAborted); }
        catch (IOException e) when (e is not BadHttpRequestException && !context.RequestAborted.IsCancellationRequested)
        {
            // Kestrel reports a malformed chunked body (a chunk size that overflows, "FFFFFFFFFFFFFFFFF") as an IOException.
            throw ApiError.BadRequest($"the request body could not be read: {e.Message}", code: "invalid_body");
        }
        using var _ = doc;
        var body = new RequestJson(doc.RootElement.Clone());
        var model = body.String("model");
        if (model is null && modelRequired) throw ApiError.BadRequest("'model' is required", "model");
        options.AdapterFor(model); // an unknown name is a 404 before any work
        return body;
    }

    private static async Task Completions(HttpContext context, ModelHost host, ServerOptions options, bool chat)
    {
        var body = await ReadBody(context, options);
        var adapter = options.AdapterFor(body.String("model"));
        var engine = host.RequireEngine();
        var tokenizer = engine.Tokenizer;
        int n = body.Integer("n", 1, MaxChoices) ?? 1;
        var prompts = chat ? [ChatPrompt.Encode(tokenizer, Messages(body, engine.MaxPromptChars))] : Prompts(body, tokenizer, engine.MaxPromptChars, context.RequestAborted);
        if (n * prompts.Count > engine.MaxQueue)
            throw ApiError.BadRequest($"n × prompts = {n * prompts.Count} sequences exceed this server's queue of {engine.MaxQueue}", "n");
        int? topLogprobs = chat
            ? (body.Bool("logprobs") ? body.Integer("top_logprobs", 0, 20) ?? 0 : null)
            : body.Integer("logprobs", 0, 5);
        long? seed = body.Long("seed");
        int? maxTokens = body.Integer(chat && body.Has("max_completion_tokens") ? "max_completion_tokens" : "max_tokens", 1, int.MaxValue);
        var defaults = engine.Defaults; // the folder's generation_config.json; request fields override it
        var template = new CompletionRequest([], 1,
            Temperature: body.Number("temperature", defaults.Temperature, 0, 2),
            TopP: body.Number("top_p", defaults.TopP, 0, 1),
            TopK: body.Integer("top_k", 0, int.MaxValue) ?? defaults.TopK,
            RepetitionPenalty: body.Number("repetition_penalty", defaults.RepetitionPenalty, 0.01, 100),
            Stop: body.Stop(),
            PresencePenalty: body.Number("presence_penalty", 0, -2, 2),
            FrequencyPenalty: body.Number("frequency_penalty", 0, -2, 2),
            TopLogprobs: topLogprobs,
            StopTokenIds: chat ? ChatPrompt.StopIds(tokenizer) : null,
            MinTokens: body.Integer("min_tokens", 0, int.MaxValue) ?? 0,
            IgnoreEos: body.Bool("ignore_eos"),
            Adapter: adapter);
        bool stream = body.Bool("stream");
        bool includeUsage = stream && body.Get("stream_options") is { ValueKind: JsonValueKind.Object } so
            && so.TryGetProperty("include_usage", out var iu) && iu.ValueKind == JsonValueKind.True;

        // Choice i of prompt p has index p·n + i and seed + i, so n choices differ yet each is reproducible.
        var requests = prompts.SelectMany(p => Enumerable.Range(0, n).Select(i => template with
        {
            PromptIds = p,
            MaxTokens = maxTokens ?? (chat ? engine.MaxContext - p.Length : 16),
            Seed = seed + i,
        })).ToList();
        foreach (var r in requests)
            if (r.PromptIds.Length >= engine.MaxContext || r.MaxTokens < 1)
                throw ApiError.BadRequest($"the prompt's {r.PromptIds.Length} tokens leave no room in the context of {engine.MaxContext}", chat ? "messages" : "prompt", "context_length_exceeded");
        context.RequestAborted.ThrowIfCancellationRequested(); // the client left while its prompts were tokenized
        // The readers below never block, so the engine runs them on its delivery work item: one per step for every stream.
        var readers = engine.SubmitAll(requests, context.RequestAborted, readersRunInline: true).ToList();
        var response = new CompletionResponse(chat, adapter ?? options.Name, tokenizer);
        int promptTokens = prompts.Sum(p => p.Length); // once per prompt, not per choice, as OpenAI counts them
        if (stream) await Stream(context, readers, response, includeUsage, promptTokens);
        else await context.Response.WriteAsJsonAsync(await Collect(readers, response, promptTokens, context.RequestAborted), context.RequestAborted);
    }

    private static async Task<JsonObject> Collect(List<ChannelReader<CompletionChunk>> readers, CompletionResponse response, int promptTokens, CancellationToken cancel)
    {
        var choices = new JsonArray();
        int completionTokens = 0;
        for (int i = 0; i < readers.Count; i++)
        {
            var text = new System.Text.StringBuilder();
            var tokens = new List<GeneratedToken>();
            CompletionChunk? last = null;
            await foreach (var chunk in readers[i].ReadAllAsync(cancel))
            {
                text.Append(chunk.Text);
                tokens.AddRange(chunk.Tokens);
                last = chunk;
            }
            completionTokens += last?.CompletionTokens ?? 0;
            choices.Add(response.Choice(i, text.ToString(), tokens, last?.FinishReason ?? "stop", final: true));
        }
        var result = response.Envelope(choices, stream: false);
        result["usage"] = CompletionResponse.Usage(promptTokens, completionTokens);
        return result;
    }

    private static async Task Stream(HttpContext context, List<ChannelReader<CompletionChunk>> readers, CompletionResponse response, bool includeUsage, int promptTokens)
    {
        context.Response.ContentType = "text/event-stream";
        context.Response.Headers.CacheControl = "no-cache";
        var cancel = context.RequestAborted;
        var body = context.Response.BodyWriter;
        var write = new SemaphoreSlim(1, 1);                // the n choices of one request share the response
        int completionTokens = 0;
        // Events go as UTF-8 straight into the response pipe through one writer (no string, no JSON nodes per token), and
        // every event already waiting is written before one flush: when the client or this thread falls behind the
        // scheduler, tokens share a send.
        using var json = new Utf8JsonWriter(body, new JsonWriterOptions { Encoder = ServerJson.Options.Encoder, SkipValidation = true });
        void EndEvent()
        {
            json.Flush();
            json.Reset();
            body.Write("\n\n"u8);
        }
        async Task Send(JsonObject e)
        {
            await write.WaitAsync(cancel);
            try
            {
                body.Write("data: "u8);
                e.WriteTo(json);
                EndEvent();
                await body.FlushAsync(cancel);
            }
            finally { write.Release(); }
        }
        await Task.WhenAll(readers.Select(async (reader, i) =>
        {
            if (response.Chat) await Send(response.Envelope([response.RoleDelta(i)], stream: true));
            while (await reader.WaitToReadAsync(cancel))
            {
                await write.WaitAsync(cancel);
                try
                {
                    while (reader.TryRead(out var chunk))
                    {
                        body.Write("data: "u8);
                        response.WriteStreamChunk(json, i, chunk);
                        EndEvent();
                        if (chunk.FinishReason is not null) Interlocked.Add(ref completionTokens, chunk.CompletionTokens);
                    }
                    await body.FlushAsync(cancel);
                }
                finally { write.Release(); }
            }
        }));
        if (includeUsage)
        {
            var usage = response.Envelope([], stream: true);
            usage["usage"] = CompletionResponse.Usage(promptTokens, completionTokens);
            await Send(usage);
        }
        await context.Response.WriteAsync("data: [DONE]\n\n", cancel);
    }

    /// <summary>The prompts as ids; a text too long to fit the context in any tokenization is refused before it is tokenized.</summary>
    private static List<int[]> Prompts(RequestJson body, ITextTokenizer tokenizer, long maxChars, CancellationToken cancel)
    {
        var p = body.Get("prompt");
        bool IsIds(JsonElement e) => e.ValueKind == JsonValueKind.Array && e.GetArrayLength() > 0 && e.EnumerateArray().All(x => x.ValueKind == JsonValueKind.Number);
        int[] Ids(JsonElement e) => [.. e.EnumerateArray().Select(x => x.TryGetInt32(out int id) ? id : throw ApiError.BadRequest("'prompt' token ids must be integers", "prompt"))];
        int[] Text(JsonElement e)
        {
            cancel.ThrowIfCancellationRequested();
            var s = RequestJson.Text(e, "prompt");
            if (s.Length > maxChars) throw TooLong("prompt", s.Length, maxChars);
            return tokenizer.Encode(s) is { Length: > 0 } ids ? ids : [tokenizer.BosId];
        }
        List<int[]> prompts = p.ValueKind switch
        {
            JsonValueKind.String => [Text(p)],
            JsonValueKind.Array when IsIds(p) => [Ids(p)],
            JsonValueKind.Array when p.GetArrayLength() > 0 && p.EnumerateArray().All(e => e.ValueKind == JsonValueKind.String) => CheckCount(p) ? [.. p.EnumerateArray().Select(Text)] : [],
            JsonValueKind.Array when p.GetArrayLength() > 0 && p.EnumerateArray().All(IsIds) => CheckCount(p) ? [.. p.EnumerateArray().Select(Ids)] : [],
            JsonValueKind.Undefined or JsonValueKind.Null => throw ApiError.BadRequest("'prompt' is required", "prompt"),
            _ => throw ApiError.BadRequest("'prompt' must be a string, an array of strings, or an array of token ids", "prompt"),
        };
        return prompts;
    }

    // Checked before any prompt is tokenized.
    private static bool CheckCount(JsonElement prompts) => prompts.GetArrayLength() <= MaxChoices
        ? true : throw ApiError.BadRequest($"'prompt' takes at most {MaxChoices} prompts", "prompt");

    private static ApiError TooLong(string param, long chars, long maxChars) => ApiError.BadRequest(
        $"'{param}' has {chars} characters, more than the {maxChars} that could fit this model's context", param, "context_length_exceeded");

    private static List<(string Role, string Content)> Messages(RequestJson body, long maxChars)
    {
        var m = body.Get("messages");
        if (m.ValueKind != JsonValueKind.Array || m.GetArrayLength() == 0)
            throw ApiError.BadRequest("'messages' must be a non-empty array", "messages");
        if (m.GetArrayLength() > maxChars) throw TooLong("messages", m.GetArrayLength(), maxChars);
        long chars = 0;
        return [.. m.EnumerateArray().Select((e, i) =>
        {
            if (e.ValueKind != JsonValueKind.Object) throw ApiError.BadRequest($"messages[{i}] must be an object", "messages");
            var message = new RequestJson(e);
            var role = message.String("role") ?? throw ApiError.BadRequest($"messages[{i}].role is required", "messages");
            if (role is not ("system" or "developer" or "user" or "assistant" or "tool"))
                throw ApiError.BadRequest($"messages[{i}].role: unknown role '{role}'", "messages");
            var content = Content(message.Get("content"), i);
            if ((chars += content.Length) > maxChars) throw TooLong("messages", chars, maxChars);
            return (role, content);
        })];
    }

    // Content is a string or an array of {"type": "text", "text": ...} parts.
    private static string Content(JsonElement content, int i) => content.ValueKind switch
    {
        JsonValueKind.String => RequestJson.Text(content, "messages"),
        JsonValueKind.Null or JsonValueKind.Undefined => "",
        JsonValueKind.Array => string.Concat(content.EnumerateArray().Select(part =>
            part.ValueKind == JsonValueKind.Object && part.TryGetProperty("text", out var t) && t.ValueKind == JsonValueKind.String
                ? RequestJson.Text(t, "messages") : throw ApiError.BadRequest($"messages[{i}].content: only text parts are supported", "messages"))),
        _ => throw ApiError.BadRequest($"messages[{i}].content must be a string or an array of text parts", "messages"),
    };

    /// <summary>
    /// A poem for a title, optionally 藏头 (acrostic) and in a regulated form ("form": "jueju5", "jueju7", "lushi5",
    /// "lushi7"): same engine, same batching; the prompt is the title line, as the poetry models are trained on "title\npoem".
    /// </summary>
    private static async Task Poems(HttpContext context, ModelHost host, ServerOptions options)
    {
        var body = await ReadBody(context, options, modelRequired: false);
        var adapter = options.AdapterFor(body.String("model"));
        var engine = host.RequireEngine();
        var title = body.RequiredString("title");
        if (title.Length > engine.MaxPromptChars) throw TooLong("title", title.Length, engine.MaxPromptChars);
        var acrostic = body.String("acrostic");
        // One character per line, and every line takes at least two tokens: a longer acrostic can never fit, and checking
        // it here keeps a huge one from building its constraint at all.
        if (acrostic is not null && acrostic.Length > engine.MaxContext / 2)
            throw ApiError.BadRequest($"'acrostic' has {acrostic.Length} characters; at most {engine.MaxContext / 2} lines fit this model's context", "acrostic");
        VerseForm? form;
        try { form = body.String("form") is { } name ? VerseForm.Parse(name) : null; }
        catch (TianGongException e) { throw ApiError.BadRequest(e.Message, "form"); }
        var prompt = engine.Tokenizer.Encode(title + "\n");
        var defaults = engine.Defaults;
        int room = engine.MaxContext - prompt.Length;
        int maxTokens = body.Integer("max_tokens", 1, int.MaxValue)
            ?? Math.Min(form is null ? defaults.MaxNewTokens : Math.Max(defaults.MaxNewTokens, PoemConstraint.TokenBudget(form)), room);
        ITokenConstraint? constraint;
        try { constraint = PoemConstraint.Create(engine.Tokenizer, form, acrostic); }
        catch (TianGongException e) { throw ApiError.BadRequest(e.Message, "acrostic"); }
        var reader = engine.Submit(new CompletionRequest(prompt, maxTokens,
            Temperature: body.Number("temperature", defaults.Temperature, 0, 2),
            TopP: body.Number("top_p", defaults.TopP, 0, 1),
            Seed: body.Long("seed"),
            Constraint: constraint,
            TopK: body.Integer("top_k", 0, int.MaxValue) ?? defaults.TopK,
            RepetitionPenalty: defaults.RepetitionPenalty,
            Adapter: adapter), context.RequestAborted, readersRunInline: true);
        var text = new System.Text.StringBuilder();
        CompletionChunk? last = null;
        await foreach (var chunk in reader.ReadAllAsync(context.RequestAborted)) { text.Append(chunk.Text); last = chunk; }
        await context.Response.WriteAsJsonAsync(new JsonObject
        {
            ["object"] = "poem",
            ["model"] = adapter ?? options.Name,
            ["title"] = title,
            ["acrostic"] = acrostic,
            ["form"] = form?.Name,
            ["poem"] = text.ToString(),
            ["finish_reason"] = last?.FinishReason ?? "stop",
            ["usage"] = CompletionResponse.Usage(prompt.Length, last?.CompletionTokens ?? 0),
        }, context.RequestAborted);
    }

    private static async Task Embeddings(HttpContext context, ModelHost host, ServerOptions options)
    {
        var body = await ReadBody(context, options);
        if (options.AdapterFor(body.String("model")) is { } adapter)
            throw ApiError.BadRequest($"'{adapter}' is a LoRA adapter: embeddings come from the base model '{options.Name}'", "model", "unsupported_for_model");
        var format = body.String("encoding_format") ?? "float";
        if (format is not ("float" or "base64"))
            throw ApiError.BadRequest("'encoding_format' must be 'float' or 'base64'", "encoding_format");
        var input = body.Get("input");
        if (!(input.ValueKind == JsonValueKind.String
              || input.ValueKind == JsonValueKind.Array && input.GetArrayLength() is > 0 and <= 64 && input.EnumerateArray().All(e => e.ValueKind == JsonValueKind.String)))
            throw ApiError.BadRequest("'input' must be a string or an array of 1 to 64 strings", "input");
        var items = input.ValueKind == JsonValueKind.String ? [input] : input.EnumerateArray().ToList();
        int images = items.Count(e => ImageDataUrl.IsOne(e.GetString()!));
        if (images > 0 && images < items.Count)
            throw ApiError.BadRequest("'input' mixes image data URLs and text; send one kind per request", "input");
        int tokens = 0;
        var vectors = images > 0
            ? await host.EmbedImagesAsync([.. items.Select(e => ImageDataUrl.Parse(e.GetString()!, "input"))], context.RequestAborted)
            : (await host.EmbedAsync(tokenizer =>
        {
            List<int[]> ids = input.ValueKind == JsonValueKind.String
                ? [Encode(input)]
                : [.. input.EnumerateArray().Select(Encode)];
            int[] Encode(JsonElement e)
            {
                context.RequestAborted.ThrowIfCancellationRequested();
                var text = RequestJson.Text(e, "input");
                if (host.Engine is { } decoder && text.Length > decoder.MaxPromptChars) throw TooLong("input", text.Length, decoder.MaxPromptChars);
                return tokenizer.Encode(text);
            }
            if (ids.Any(i => i.Length == 0)) throw ApiError.BadRequest("'input' must not contain empty strings", "input");
            tokens = ids.Sum(i => i.Length);
            return ids;
        }, context.RequestAborted)).Vectors;
        await context.Response.WriteAsJsonAsync(new JsonObject
        {
            ["object"] = "list",
            ["model"] = options.Name,
            ["data"] = new JsonArray([.. vectors.Select((v, i) => (JsonNode)new JsonObject
            {
                ["object"] = "embedding",
                ["index"] = i,
                // base64: the little-endian float32 bytes, as OpenAI's API returns them.
                ["embedding"] = format == "base64"
                    ? Convert.ToBase64String(System.Runtime.InteropServices.MemoryMarshal.AsBytes(v.AsSpan()))
                    : new JsonArray([.. v.Select(x => (JsonNode)x)]),
            })]),
            ["usage"] = new JsonObject { ["prompt_tokens"] = tokens, ["total_tokens"] = tokens },
        }, context.RequestAborted);
    }
}
