using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using TianGong.Inference.Serving;
using TianGong.Server;
using Xunit.Abstractions;

namespace TianGong.Tests.Serving;

/// <summary>Issue 14's server part: hostile requests get 4xx (never 5xx), bounded work, and never harm another request.</summary>
public class HostileRequestTests(ITestOutputHelper output)
{
    private static object Seeded(string prompt, int maxTokens, long seed, double temperature = 0.9, double topP = 1.0) => new
    {
        model = "tiny-poet", prompt, max_tokens = maxTokens, seed, temperature, top_p = topP,
    };

    private static string? Text(JsonObject body) => (string?)body["choices"]?[0]?["text"];

    /// <summary>An HTTP/1.1 request written by hand (HttpClient will not send a malformed chunk size); returns the status code.</summary>
    private static async Task<int> RawStatus(Uri address, string head, byte[] body)
    {
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(address.Host, address.Port);
        var stream = tcp.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes(head));
        await stream.WriteAsync(body);
        await stream.FlushAsync();
        using var reader = new StreamReader(stream, Encoding.ASCII);
        var statusLine = await reader.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(30)) ?? "";
        var parts = statusLine.Split(' ');
        return parts.Length > 1 && int.TryParse(parts[1], out int status) ? status : throw new InvalidDataException($"no HTTP status line: '{statusLine}'");
    }

    private static byte[] Utf8(string s) => Encoding.UTF8.GetBytes(s);

    /// <summary>One hostile request of class <paramref name="kind"/>, varied by <paramref name="random"/>.</summary>
    private static async Task<int> Hostile(TestServer server, Uri address, int kind, Random random)
    {
        const string model = "\"model\": \"tiny-poet\"";
        HttpContent Raw(byte[] bytes) => new ByteArrayContent(bytes) { Headers = { { "Content-Type", "application/json" } } };
        async Task<int> Send(string path, HttpContent content)
        {
            using var response = await server.Client.PostAsync(path, content);
            return (int)response.StatusCode;
        }
        string tiny = random.Next(2) == 0 ? "1e-300" : "5e-324";
        switch (kind)
        {
            case 0: // escaped lone surrogates, in every string field the server decodes
                var field = new[] { "prompt", "stop", "messages" }[random.Next(3)];
                var surrogate = random.Next(2) == 0 ? "\\ud800" : "\\udfff\\ud800x";
                return field == "messages"
                    ? await Send("/v1/chat/completions", Raw(Utf8($"{{{model}, \"messages\": [{{\"role\": \"user\", \"content\": \"a{surrogate}\"}}], \"max_tokens\": 2}}")))
                    : await Send("/v1/completions", Raw(Utf8($"{{{model}, \"prompt\": \"春\", \"{field}\": \"{surrogate}\", \"max_tokens\": 2}}")));
            case 1: // invalid UTF-8 bytes inside a JSON string
                bool poem = random.Next(2) == 0;
                var bytes = Utf8(poem ? "{\"title\": \"春XX眠\"}" : $"{{{model}, \"prompt\": \"春XX眠\", \"max_tokens\": 2}}");
                int at = Array.IndexOf(bytes, (byte)'X');
                bytes[at] = (byte)(0x80 + random.Next(0x40));
                bytes[at + 1] = (byte)(0xF8 + random.Next(8));
                return await Send(poem ? "/v1/poems" : "/v1/completions", Raw(bytes));
            case 2: // a chunked body whose chunk size overflows every integer type
                var size = random.Next(2) == 0 ? "FFFFFFFFFFFFFFFFF" : new string('F', 17 + random.Next(20));
                return await RawStatus(address,
                    $"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                    Utf8($"{size}\r\n{{{model}}}\r\n0\r\n\r\n"));
            case 3: // vanishing temperature / top_p: valid requests, answered 200 and greedy or nearly so
                return await Send("/v1/completions", Raw(Utf8($"{{{model}, \"prompt\": \"床前\", \"max_tokens\": 3, \"temperature\": {tiny}, \"top_p\": {(random.Next(2) == 0 ? tiny : "1")}}}")));
            case 4: // a prompt far longer than the context could ever hold: refused before it is tokenized
                return await Send("/v1/completions", JsonContent.Create(new { model = "tiny-poet", prompt = new string('a', 200_000 + random.Next(1000)) }));
            case 5: // an acrostic longer than any poem that fits
                return await Send("/v1/poems", JsonContent.Create(new { title = "春", acrostic = new string('春', 300 + random.Next(100_000)) }));
            case 6: // more sequences (n × prompts) than the queue can ever hold
                return await Send("/v1/completions", JsonContent.Create(new { model = "tiny-poet", prompt = Enumerable.Repeat("春", 16).ToArray(), n = 16, max_tokens = 2 }));
            default: // random bytes, truncated or mistyped JSON
                var junk = new byte[random.Next(1, 200)];
                random.NextBytes(junk);
                var text = random.Next(3) switch
                {
                    0 => junk,
                    1 => Utf8($"{{{model}, \"prompt\": [1, -5, 2147483648], \"max_tokens\": -{random.Next(9)}}}"),
                    _ => Utf8($"{{{model}, \"prompt\": \"春\", \"n\": {random.Next(-5, 40)}, \"top_logprobs\": {{}}, \"stop\": [\"\", 1]"),
                };
                return await Send(random.Next(2) == 0 ? "/v1/completions" : "/v1/chat/completions", Raw(text));
        }
    }

    [Fact]
    public async Task A_seeded_fuzz_run_gets_no_5xx_leaves_the_server_alive_and_seeded_outputs_unchanged()
    {
        await using var server = await TestServer.Start(new ServingOptions(MaxBatch: 4, MaxContext: 128, MaxQueue: 32));
        var address = server.Client.BaseAddress!;
        var before = await server.Post("/v1/completions", Seeded("春眠", 12, seed: 21));
        Assert.Equal(200, before.Status);

        var random = new Random(14);
        // 240 requests in the suite; TIANGONG_FUZZ_REQUESTS runs it longer (how RSS was studied for docs/benchmarks.md).
        int count = int.TryParse(Environment.GetEnvironmentVariable("TIANGONG_FUZZ_REQUESTS"), out int n) ? n : 240;
        var plan = Enumerable.Range(0, count).Select(i => (Kind: i % 8, Seed: random.Next())).ToList();
        var statuses = new List<(int Kind, int Status)>();
        foreach (var (wave, i) in plan.Chunk(8).Select((w, i) => (w, i))) // eight at a time: hostile requests share batches
        {
            var results = await Task.WhenAll(wave.Select(async p => (p.Kind, await Hostile(server, address, p.Kind, new Random(p.Seed)))));
            statuses.AddRange(results);
            // For docs/benchmarks.md (RSS under a fuzz run): printed, not asserted, as the test host shares the process.
            if (i % Math.Max(10, count / 80) == 9) output.WriteLine($"after {statuses.Count} hostile requests: RSS {Environment.WorkingSet / 1e6:F0} MB");
        }
        Assert.All(statuses, s => Assert.True(s.Status < 500, $"request class {s.Kind} got {s.Status}"));
        Assert.All(statuses.Where(s => s.Kind == 3), s => Assert.Equal(200, s.Status));
        Assert.All(statuses.Where(s => s.Kind is 0 or 1 or 4 or 5 or 6), s => Assert.Equal(400, s.Status));
        Assert.All(statuses.Where(s => s.Kind == 2), s => Assert.InRange(s.Status, 400, 499));

        using var health = await server.Client.GetAsync("/health");
        Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        var after = await server.Post("/v1/completions", Seeded("春眠", 12, seed: 21));
        Assert.Equal(200, after.Status);
        Assert.Equal(Text(before.Body), Text(after.Body));
    }

    [Fact]
    public async Task A_vanishing_temperature_or_top_p_beside_a_seeded_request_harms_neither()
    {
        await using var server = await TestServer.Start(new ServingOptions(MaxBatch: 8));
        var alone = await server.Post("/v1/completions", Seeded("床前", 16, seed: 3));
        var greedy = await server.Post("/v1/completions", Seeded("春眠", 16, seed: 1, temperature: 0));
        var bad = new[] { (1e-300, 1.0), (5e-324, 1.0), (0.9, 5e-324), (0.9, 1e-300), (5e-324, 5e-324) }
            .Select(p => server.Post("/v1/completions", Seeded("春眠", 16, seed: 9, temperature: p.Item1, topP: p.Item2))).ToList();
        var beside = server.Post("/v1/completions", Seeded("床前", 16, seed: 3));
        var results = await Task.WhenAll([.. bad, beside]);
        Assert.All(results, r => Assert.Equal(200, r.Status));
        Assert.Equal(Text(alone.Body), Text(results[^1].Body));
        // A vanishing temperature is greedy; a vanishing top_p keeps only the most likely token: greedy too.
        Assert.All(results[..^1], r => Assert.Equal(Text(greedy.Body), Text(r.Body)));
    }

    [Fact]
    public async Task A_request_is_admitted_whole_or_not_at_all()
    {
        await using var server = await TestServer.Start(new ServingOptions(MaxBatch: 1, MaxQueue: 3));
        var engine = server.Host.Engine!;
        using var cancel = new CancellationTokenSource();
        var tokenizer = engine.Tokenizer;
        var prompt = tokenizer.Encode("春眠");
        // One long sequence holds the only slot, nearly the whole 512-token context, past its end-of-sequence token too
        // (the fixture's random weights depend on the global RNG, which tests in parallel collections also draw from,
        // so a sampled early end would sometimes free the slot and let the waiting ones in); two more wait, leaving
        // room for one.
        var running = engine.Submit(new CompletionRequest(prompt, 500, Seed: 1, IgnoreEos: true), cancel.Token);
        await running.WaitToReadAsync();
        // The waiting ones ignore end-of-sequence too, so each returns its 2 tokens whatever the weights make likely.
        var waiting = engine.SubmitAll([new CompletionRequest(prompt, 2, Seed: 2, IgnoreEos: true), new CompletionRequest(prompt, 2, Seed: 3, IgnoreEos: true)]);
        long acceptedBefore = engine.Metrics.Read().Requests;

        // Two sequences do not fit the one free place: neither is queued, so a single one still fits afterwards.
        Assert.Throws<EngineBusyException>(() => engine.SubmitAll([new CompletionRequest(prompt, 2, Seed: 4), new CompletionRequest(prompt, 2, Seed: 5)]));
        Assert.Equal(acceptedBefore, engine.Metrics.Read().Requests);
        Assert.Equal(2, engine.Metrics.Read().QueueDepth);
        var single = engine.Submit(new CompletionRequest(prompt, 2, Seed: 6, IgnoreEos: true));
        // More than the queue could ever hold is the client's error, not a reason to retry.
        var tooMany = Assert.Throws<TianGongException>(() => engine.SubmitAll([.. Enumerable.Repeat(new CompletionRequest(prompt, 2), 4)]));
        Assert.StartsWith("n:", tooMany.Message);

        cancel.Cancel();
        foreach (var reader in waiting.Append(single))
        {
            var chunks = await reader.ReadAllAsync().ToListAsync();
            Assert.Equal(2, chunks.Sum(c => c.Tokens.Count));
        }
        var (status, body) = await server.Post("/v1/completions", new { model = "tiny-poet", prompt = "春", n = 4, max_tokens = 2 });
        Assert.Equal(400, status);
        Assert.Equal("n", (string?)body["error"]!["param"]);
    }

    [Fact]
    public void Binding_beyond_loopback_without_an_api_key_warns()
    {
        Assert.Null(TianGongServer.ExposedWithoutKey(new ServerOptions("m", Host: "127.0.0.1")));
        Assert.Null(TianGongServer.ExposedWithoutKey(new ServerOptions("m", Host: "::1")));
        Assert.Null(TianGongServer.ExposedWithoutKey(new ServerOptions("m", Host: "0.0.0.0", ApiKey: "k")));
        Assert.Contains("WITHOUT an API key", TianGongServer.ExposedWithoutKey(new ServerOptions("m", Host: "0.0.0.0")));
    }
}
