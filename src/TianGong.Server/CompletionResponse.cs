using System.Text.Json;
using System.Text.Json.Nodes;
using TianGong.Inference.Serving;
using TianGong.Tokenizers;

namespace TianGong.Server;

/// <summary>
/// OpenAI's response shapes: text_completion (legacy logprobs: tokens, token_logprobs, top_logprobs, text_offset)
/// and chat.completion / chat.completion.chunk (logprobs.content entries with token, logprob, bytes, top_logprobs).
/// </summary>
internal sealed class CompletionResponse(bool chat, string model, ITextTokenizer tokenizer)
{
    private readonly string id = (chat ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("N");
    private readonly long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    public bool Chat => chat;

    // The envelope's strings, escaped once for the stream rather than once per chunk.
    private JsonEncodedText? idJson, modelJson;

    /// <summary>
    /// One streamed chunk of choice <paramref name="index"/>, written straight into <paramref name="json"/>: the same bytes as
    /// <c>Envelope([Choice(index, …, final: false)], stream: true)</c> written by it (a test holds them equal), without the
    /// dozen JSON nodes that cost per token; chunks with log-probabilities (rare, and large anyway) still take the nodes.
    /// </summary>
    public void WriteStreamChunk(Utf8JsonWriter json, int index, CompletionChunk chunk)
    {
        if (chunk.Tokens.Count > 0 && chunk.Tokens[0].Top is not null)
        {
            Envelope([Choice(index, chunk.Text, chunk.Tokens, chunk.FinishReason, final: false)], stream: true).WriteTo(json);
            return;
        }
        json.WriteStartObject();
        json.WriteString("id"u8, idJson ??= JsonEncodedText.Encode(id, ServerJson.Options.Encoder));
        json.WriteString("object"u8, chat ? "chat.completion.chunk"u8 : "text_completion"u8);
        json.WriteNumber("created"u8, created);
        json.WriteString("model"u8, modelJson ??= JsonEncodedText.Encode(model, ServerJson.Options.Encoder));
        json.WriteStartArray("choices"u8);
        json.WriteStartObject();
        json.WriteNumber("index"u8, index);
        if (!chat) json.WriteString("text"u8, chunk.Text);
        else
        {
            json.WriteStartObject("delta"u8);
            if (chunk.Text.Length > 0) json.WriteString("content"u8, chunk.Text);
            json.WriteEndObject();
        }
        json.WriteNull("logprobs"u8);
        if (chunk.FinishReason is { } reason) json.WriteString("finish_reason"u8, reason);
        else json.WriteNull("finish_reason"u8);
        json.WriteEndObject();
        json.WriteEndArray();
        json.WriteEndObject();
    }

    public JsonObject Envelope(JsonArray choices, bool stream) => new()
    {
        ["id"] = id,
        ["object"] = chat ? (stream ? "chat.completion.chunk" : "chat.completion") : "text_completion",
        ["created"] = created,
        ["model"] = model,
        ["choices"] = choices,
    };

    /// <summary>A whole choice (final) or one streamed delta.</summary>
    public JsonObject Choice(int index, string text, IReadOnlyList<GeneratedToken> tokens, string? finishReason, bool final)
    {
        var choice = new JsonObject { ["index"] = index };
        if (!chat) choice["text"] = text;
        else if (final) choice["message"] = new JsonObject { ["role"] = "assistant", ["content"] = text };
        else choice["delta"] = text.Length > 0 ? new JsonObject { ["content"] = text } : new JsonObject();
        choice["logprobs"] = tokens.Count == 0 || tokens[0].Top is null ? null : chat ? ChatLogprobs(tokens) : LegacyLogprobs(tokens);
        choice["finish_reason"] = finishReason;
        return choice;
    }

    public JsonObject RoleDelta(int index) => new()
    {
        ["index"] = index,
        ["delta"] = new JsonObject { ["role"] = "assistant", ["content"] = "" },
        ["logprobs"] = null,
        ["finish_reason"] = null,
    };

    public static JsonObject Usage(int prompt, int completion) => new()
    {
        ["prompt_tokens"] = prompt,
        ["completion_tokens"] = completion,
        ["total_tokens"] = prompt + completion,
    };

    private string Text(int id) => tokenizer.Decode([id]);

    private JsonObject LegacyLogprobs(IReadOnlyList<GeneratedToken> tokens)
    {
        var offsets = new JsonArray();
        int offset = 0;
        foreach (var t in tokens) { offsets.Add(offset); offset += Text(t.TokenId).Length; }
        return new JsonObject
        {
            ["tokens"] = new JsonArray([.. tokens.Select(t => (JsonNode)Text(t.TokenId))]),
            ["token_logprobs"] = new JsonArray([.. tokens.Select(t => (JsonNode)t.Logprob)]),
            ["top_logprobs"] = new JsonArray([.. tokens.Select(t =>
            {
                var top = new JsonObject();
                foreach (var alt in t.Top!) top[Text(alt.TokenId)] = alt.Logprob; // later duplicates of one spelling overwrite, as in OpenAI's dict
                return (JsonNode)top;
            })]),
            ["text_offset"] = offsets,
        };
    }

    private JsonObject ChatLogprobs(IReadOnlyList<GeneratedToken> tokens) => new()
    {
        ["content"] = new JsonArray([.. tokens.Select(t =>
        {
            var entry = Entry(t.TokenId, t.Logprob);
            entry["top_logprobs"] = new JsonArray([.. t.Top!.Select(alt => (JsonNode)Entry(alt.TokenId, alt.Logprob))]);
            return (JsonNode)entry;
        })]),
    };

    private JsonObject Entry(int id, float logprob) => new()
    {
        ["token"] = Text(id),
        ["logprob"] = logprob,
        ["bytes"] = new JsonArray([.. tokenizer.TokenBytes(id).Select(b => (JsonNode)(int)b)]),
    };
}
