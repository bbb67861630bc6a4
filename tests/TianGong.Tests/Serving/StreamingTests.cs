using System.Net.Http.Json;
using System.Text.Json.Nodes;

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
}
