using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;
using TianGong.Inference.Serving;
using TianGong.Server;
using TianGong.Tokenizers;

namespace TianGong.Tests.Serving;

/// <summary>
/// Streaming several choices at once: the SSE writer takes every event waiting in a choice's channel before one flush and
/// writes events as UTF-8 into the response pipe; each choice's streamed pieces must still be its whole text.
/// </summary>
public class StreamingTests
{
    [Fact]
    public async Task Three_streamed_choices_each_put_together_the_text_of_the_same_request_not_streamed()
    {
        await using var server = await TestServer.Start();
        var request = new { model = "tiny-poet", prompt = "床前", n = 3, max_tokens = 20, seed = 5, temperature = 1.0, stop = new[] { "。" } };
        var (status, full) = await server.Post("/v1/completions", request);
        Assert.Equal(200, status);

        using var response = await server.Client.PostAsJsonAsync("/v1/completions",
            new { request.model, request.prompt, request.n, request.max_tokens, request.seed, request.temperature, request.stop, stream = true });
        var events = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("data: [DONE]", events[^1]);
        var choices = events[..^1].Select(e => JsonNode.Parse(e["data: ".Length..])!["choices"]![0]!).ToList();
        for (int i = 0; i < 3; i++)
        {
            var mine = choices.Where(c => (int)c["index"]! == i).ToList();
            Assert.Equal((string?)full["choices"]![i]!["text"], string.Concat(mine.Select(c => (string?)c["text"])));
            Assert.Equal((string?)full["choices"]![i]!["finish_reason"], (string?)mine[^1]["finish_reason"]);
            Assert.All(mine[..^1], c => Assert.Null((string?)c["finish_reason"]));
        }
    }

    /// <summary>
    /// The streamed chunk written straight by a Utf8JsonWriter is, byte for byte, what the JSON nodes of the non-streamed
    /// shapes give (OpenAI's SDKs parse both): text and chat, with and without text and finish reason, text that JSON
    /// escapes (quotes, backslashes, newlines, control characters), Chinese, characters outside the BMP, and a model name that needs escaping.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_streamed_chunk_has_the_bytes_of_the_same_chunk_built_from_json_nodes(bool chat)
    {
        var tokenizer = ByteLevelBpeTrainer.Train(TestServer.Poems, new BpeTrainerOptions(VocabSize: 300, MinFrequency: 2));
        var response = new CompletionResponse(chat, "tiny \"poet\" 詩", tokenizer);
        string[] texts = ["", "床前明月光", "say \"hi\"\\ \n\t\u0001\u007f end", "😀 <b>&amp;</b> '", "\uFFFD"];
        foreach (var text in texts)
            foreach (var reason in new[] { null, "stop", "length" })
                foreach (int index in new[] { 0, 7 })
                {
                    var chunk = new CompletionChunk(text, [new GeneratedToken(5, -0.5f, null)], reason, 3, 4);
                    var expected = Write(json => response.Envelope([response.Choice(index, text, chunk.Tokens, reason, final: false)], stream: true).WriteTo(json));
                    var actual = Write(json => response.WriteStreamChunk(json, index, chunk));
                    Assert.Equal(expected, actual);
                    var choice = JsonNode.Parse(actual)!["choices"]![0]!;
                    Assert.Equal(text, (string?)(chat ? choice["delta"]!["content"] ?? "" : choice["text"]));
                }
        // With log-probabilities the chunk takes the nodes' path: still one event of the same shape.
        var withTop = new CompletionChunk("x", [new GeneratedToken(5, -0.5f, [new TopLogprob(5, -0.5f), new TopLogprob(6, -1.5f)])], null, 3, 1);
        Assert.Equal(Write(json => response.Envelope([response.Choice(0, "x", withTop.Tokens, null, final: false)], stream: true).WriteTo(json)),
            Write(json => response.WriteStreamChunk(json, 0, withTop)));

        static string Write(Action<Utf8JsonWriter> write)
        {
            var buffer = new System.Buffers.ArrayBufferWriter<byte>();
            using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = ServerJson.Options.Encoder, SkipValidation = true }))
                write(json);
            return System.Text.Encoding.UTF8.GetString(buffer.WrittenSpan);
        }
    }
}
