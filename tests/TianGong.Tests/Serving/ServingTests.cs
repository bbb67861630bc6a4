using TianGong.Models;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Inference.Serving;

namespace TianGong.Tests.Serving;

public class ServingTests
{
    // OpenAI's plain sampling (no top-k, no nucleus), not the test folder's generation_config.json defaults.
    private static object Completion(string prompt, int maxTokens, long seed, double temperature = 1.0, bool stream = false) =>
        new { model = "tiny-poet", prompt, max_tokens = maxTokens, seed, temperature, stream, top_k = 0, top_p = 1.0 };

    [Fact]
    public async Task Completions_return_text_usage_logprobs_and_a_length_finish()
    {
        await using var server = await TestServer.Start();
        var (status, body) = await server.Post("/v1/completions", new { model = "tiny-poet", prompt = "春眠", max_tokens = 5, temperature = 0, logprobs = 2, stop = (string?)null });
        Assert.Equal(200, status);
        Assert.Equal("text_completion", (string?)body["object"]);
        var choice = body["choices"]![0]!;
        Assert.Equal("length", (string?)choice["finish_reason"]);
        Assert.Equal(5, (int)body["usage"]!["completion_tokens"]!);
        Assert.True((int)body["usage"]!["prompt_tokens"]! > 0);
        Assert.Equal(5, choice["logprobs"]!["token_logprobs"]!.AsArray().Count);
        Assert.All(choice["logprobs"]!["top_logprobs"]!.AsArray(), t => Assert.InRange(t!.AsObject().Count, 1, 2));
        Assert.Equal(string.Concat(choice["logprobs"]!["tokens"]!.AsArray().Select(t => (string?)t)), (string?)choice["text"]);
    }

    [Fact]
    public async Task Chat_streams_openai_chunks_ending_with_done_and_matches_the_non_streamed_reply()
    {
        await using var server = await TestServer.Start();
        var request = new { model = "tiny-poet", messages = new[] { new { role = "user", content = "床前明月光" } }, max_tokens = 12, temperature = 0.9, seed = 3 };
        var (status, full) = await server.Post("/v1/chat/completions", request);
        Assert.Equal(200, status);
        Assert.Equal("chat.completion", (string?)full["object"]);
        Assert.Equal("assistant", (string?)full["choices"]![0]!["message"]!["role"]);

        using var response = await server.Client.PostAsJsonAsync("/v1/chat/completions",
            new { request.model, request.messages, request.max_tokens, request.temperature, request.seed, stream = true, stream_options = new { include_usage = true } });
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType!.MediaType);
        var events = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.All(events, e => Assert.StartsWith("data: ", e));
        Assert.Equal("data: [DONE]", events[^1]);
        var chunks = events[..^1].Select(e => JsonNode.Parse(e["data: ".Length..])!).ToList();
        Assert.All(chunks, c => Assert.Equal("chat.completion.chunk", (string?)c["object"]));
        Assert.Equal("assistant", (string?)chunks[0]["choices"]![0]!["delta"]!["role"]);
        var text = string.Concat(chunks.Where(c => c["choices"]!.AsArray().Count > 0).Select(c => (string?)c["choices"]![0]!["delta"]!["content"]));
        Assert.Equal((string?)full["choices"]![0]!["message"]!["content"], text);
        Assert.NotNull(chunks[^2]["choices"]![0]!["finish_reason"]);
        Assert.Equal((int)full["usage"]!["completion_tokens"]!, (int)chunks[^1]["usage"]!["completion_tokens"]!);
    }

    [Fact]
    public async Task A_seeded_request_gives_the_same_tokens_alone_and_among_seven_concurrent_ones()
    {
        await using var server = await TestServer.Start(new ServingOptions(MaxBatch: 8));
        var alone = await server.Post("/v1/completions", Completion("春眠", 24, seed: 11));
        var others = Enumerable.Range(0, 7).Select(i => server.Post("/v1/completions", Completion(TestServer.Poems[i % 4][..(2 + i)], 30 + i, seed: i)));
        var together = server.Post("/v1/completions", Completion("春眠", 24, seed: 11));
        var results = await Task.WhenAll([.. others, together]);
        Assert.All(results, r => Assert.Equal(200, r.Status));
        Assert.Equal((string?)alone.Body["choices"]![0]!["text"], (string?)results[^1].Body["choices"]![0]!["text"]);
        var another = await server.Post("/v1/completions", Completion("春眠", 24, seed: 12));
        Assert.NotEqual((string?)alone.Body["choices"]![0]!["text"], (string?)another.Body["choices"]![0]!["text"]);
    }

    [Fact]
    public async Task A_client_disconnect_cancels_its_sequence_and_frees_the_slot()
    {
        // The slower model keeps the first sequence decoding while the test queues, is refused and disconnects; ignore_eos:
        // a sampled end-of-sequence would free the slot early. 2,000 tokens over a growing context take several times as
        // long as the rest of the test even on a loaded machine (490 were once decoded before the disconnect arrived).
        await using var server = await TestServer.StartSlow(new ServingOptions(MaxBatch: 1, MaxQueue: 1));
        using (var cancel = new CancellationTokenSource())
        {
            var holding = new { model = "tiny-poet", prompt = "春眠", max_tokens = 2000, seed = 1, temperature = 1.0, stream = true, top_k = 0, top_p = 1.0, ignore_eos = true };
            var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = JsonContent.Create(holding) };
            using var response = await server.Client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancel.Token);
            var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cancel.Token));
            Assert.StartsWith("data: ", await reader.ReadLineAsync(cancel.Token));
            // The one slot is busy: a second request waits in the queue and a third is turned away.
            var queued = server.Post("/v1/completions", Completion("床前", 3, seed: 2));
            for (int i = 0; i < 100 && server.Host.Engine!.Metrics.Read().QueueDepth == 0; i++) await Task.Delay(10);
            using var rejected = await server.Client.PostAsJsonAsync("/v1/completions", Completion("床前", 3, seed: 2));
            Assert.Equal(HttpStatusCode.TooManyRequests, rejected.StatusCode);
            Assert.NotNull(rejected.Headers.RetryAfter);
            // Dropping the unread response closes the connection: that is the disconnect (cancelling the token alone
            // does not, once the headers are in), and only it frees the slot for the queued request.
            cancel.Cancel();
            response.Dispose();
            var (status, _) = await queued;
            Assert.Equal(200, status);
        }
        // The scheduler updates the batch-size gauge after it has sent the queued request's last chunk: give it a moment.
        for (int i = 0; i < 200 && server.Host.Engine!.Metrics.Read().BatchSize != 0; i++) await Task.Delay(10);
        var metrics = server.Host.Engine!.Metrics.Read();
        Assert.True(metrics.CompletionTokens < 1000, $"the cancelled sequence kept decoding: {metrics.CompletionTokens} tokens");
        Assert.Equal(0, metrics.BatchSize);
    }

    [Fact]
    public async Task Models_health_and_metrics_answer_and_health_is_503_until_the_model_is_loaded()
    {
        var gate = new TaskCompletionSource();
        await using var server = await TestServer.Start(load: () => { gate.Task.Wait(); return TestServer.LoadFolder(); });
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await server.Client.GetAsync("/health")).StatusCode);
        var (early, error) = await server.Post("/v1/completions", Completion("春", 2, 1));
        Assert.Equal(503, early);
        Assert.NotNull(error["error"]!["message"]);
        gate.SetResult();
        await server.WaitReady();
        Assert.Equal(HttpStatusCode.OK, (await server.Client.GetAsync("/health")).StatusCode);

        var models = JsonNode.Parse(await server.Client.GetStringAsync("/v1/models"))!;
        Assert.Equal("tiny-poet", (string?)models["data"]![0]!["id"]);
        await server.Post("/v1/completions", Completion("春", 3, 1));
        var metrics = await server.Client.GetStringAsync("/metrics");
        // OpenTelemetry's exporter labels every series with the meter it came from.
        Assert.Contains("# TYPE tiangong_requests_total counter\n", metrics);
        Assert.Contains("tiangong_requests_total{otel_scope_name=\"tiangong\"} 1\n", metrics);
        Assert.Contains("tiangong_generation_tokens_total{otel_scope_name=\"tiangong\"} 3\n", metrics);
        Assert.Contains("tiangong_time_to_first_token_seconds_count{otel_scope_name=\"tiangong\"} 1\n", metrics);
        Assert.Contains("tiangong_time_to_first_token_seconds_bucket{otel_scope_name=\"tiangong\",le=\"+Inf\"} 1\n", metrics);
        Assert.Contains("tiangong_queue_depth{otel_scope_name=\"tiangong\"} 0\n", metrics);
        Assert.Contains("tiangong_batch_size", metrics);
        Assert.Contains("tiangong_generation_tokens_per_second", metrics);
    }

    [Fact]
    public async Task Bad_input_gets_an_openai_error_object_and_a_4xx_never_a_500()
    {
        await using var server = await TestServer.Start(new ServingOptions(MaxBatch: 2, MaxContext: 64), maxBody: 4096);
        async Task Expect(int status, HttpContent content, string? param = null)
        {
            using var response = await server.Client.PostAsync("/v1/completions", content);
            Assert.Equal(status, (int)response.StatusCode);
            var error = JsonNode.Parse(await response.Content.ReadAsStringAsync())!["error"]!;
            Assert.False(string.IsNullOrEmpty((string?)error["message"]));
            Assert.NotNull(error["type"]);
            if (param is not null) Assert.Equal(param, (string?)error["param"]);
        }
        StringContent Json(string s) => new(s, Encoding.UTF8, "application/json");
        await Expect(400, Json("{\"model\": \"tiny-poet\", \"prompt\": "));
        await Expect(400, Json("[1, 2]"));
        await Expect(400, Json("{\"model\": \"tiny-poet\", \"prompt\": \"春\", \"max_tokens\": \"many\"}"), "max_tokens");
        await Expect(400, Json("{\"model\": \"tiny-poet\", \"prompt\": \"春\", \"stop\": 5}"), "stop");
        await Expect(400, Json("{\"model\": \"tiny-poet\", \"prompt\": \"春\", \"temperature\": 9}"), "temperature");
        await Expect(404, Json("{\"model\": \"gpt-9\", \"prompt\": \"春\"}"), "model");
        await Expect(413, Json("{\"model\": \"tiny-poet\", \"prompt\": \"" + new string('a', 8000) + "\"}"));
        await Expect(400, Json("{\"model\": \"tiny-poet\", \"prompt\": [" + string.Join(",", Enumerable.Repeat(5, 70)) + "]}"), "prompt");
        await Expect(400, Json("{\"model\": \"tiny-poet\", \"prompt\": \"春\", \"max_tokens\": 100}"), "max_tokens");
        await Expect(400, Json("{\"model\": \"tiny-poet\", \"prompt\": [99999]}"), "prompt");
        using var missing = await server.Client.GetAsync("/v1/nothing");
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
    }

    [Fact]
    public async Task An_api_key_guards_v1_routes_but_not_health_or_metrics()
    {
        await using var server = await TestServer.Start(apiKey: "sk-test-123");
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.Client.GetAsync("/v1/models")).StatusCode);
        var wrong = new HttpRequestMessage(HttpMethod.Get, "/v1/models") { Headers = { Authorization = new AuthenticationHeaderValue("Bearer", "sk-test-124") } };
        using var wrongResponse = await server.Client.SendAsync(wrong);
        Assert.Equal(HttpStatusCode.Unauthorized, wrongResponse.StatusCode);
        Assert.Equal("invalid_api_key", (string?)JsonNode.Parse(await wrongResponse.Content.ReadAsStringAsync())!["error"]!["code"]);
        var right = new HttpRequestMessage(HttpMethod.Get, "/v1/models") { Headers = { Authorization = new AuthenticationHeaderValue("Bearer", "sk-test-123") } };
        Assert.Equal(HttpStatusCode.OK, (await server.Client.SendAsync(right)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.Client.GetAsync("/health")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.Client.GetAsync("/metrics")).StatusCode);
    }

    [Fact]
    public async Task Poems_follow_the_acrostic_and_embeddings_are_mean_pooled_hidden_states()
    {
        await using var server = await TestServer.Start();
        var (status, poem) = await server.Post("/v1/poems", new { title = "春夜", acrostic = "春床", max_tokens = 40, seed = 1 });
        Assert.Equal(200, status);
        var lines = ((string?)poem["poem"])!.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.StartsWith("春", lines[0]);
        if (lines.Length > 1) Assert.StartsWith("床", lines[1]);

        var (embStatus, emb) = await server.Post("/v1/embeddings", new { model = "tiny-poet", input = new[] { "春眠", "床前明月光" } });
        Assert.Equal(200, embStatus);
        var vector = emb["data"]![1]!["embedding"]!.AsArray().Select(v => (float)v!).ToArray();
        Assert.Equal(32, vector.Length);
        using var loaded = TestServer.LoadFolder();
        var model = loaded.AsCausalLM("test");
        using var _ = no_grad();
        using var hidden = model.Hidden(tensor(loaded.Tokenizer!.Encode("床前明月光").Select(i => (long)i).ToArray()).unsqueeze(0));
        var expected = hidden[0].mean([0]).data<float>().ToArray();
        Assert.Equal(expected, vector, (a, b) => Math.Abs(a - b) < 1e-4);
    }
}

public class PoemAndDefaultsServingTests
{
    [Theory]
    [InlineData("jueju5", null)]
    [InlineData("lushi7", null)]
    [InlineData("jueju7", "春床")]
    public async Task Poems_in_a_form_have_its_shape_and_begin_lines_with_the_acrostic(string form, string? acrostic)
    {
        await using var server = await TestServer.Start();
        var (status, poem) = await server.Post("/v1/poems", new { title = "春夜", form, acrostic, seed = 5 });
        Assert.Equal(200, status);
        var text = (string)poem["poem"]!;
        Assert.True(TianGong.Poetry.VerseForm.Parse(form).Matches(text), text);
        Assert.Equal("stop", (string?)poem["finish_reason"]);
        Assert.Equal(form, (string?)poem["form"]);
        for (int i = 0; i < (acrostic?.Length ?? 0); i++) Assert.StartsWith(acrostic![i].ToString(), text.Split('\n')[i]);
    }

    [Fact]
    public async Task A_bad_form_or_an_acrostic_too_long_for_it_is_a_400_naming_the_field()
    {
        await using var server = await TestServer.Start();
        var (status, error) = await server.Post("/v1/poems", new { title = "春夜", form = "sonnet" });
        Assert.Equal(400, status);
        Assert.Equal("form", (string?)error["error"]!["param"]);
        var (tooLong, error2) = await server.Post("/v1/poems", new { title = "春夜", form = "jueju5", acrostic = "春夏秋冬雪" });
        Assert.Equal(400, tooLong);
        Assert.Contains("a jueju5 poem has 4 lines", (string)error2["error"]!["message"]!);
    }

    [Fact]
    public async Task Fields_a_request_leaves_out_come_from_generation_config_json()
    {
        // The test folder's generation_config.json says do_sample, temperature 0.8, top_k 40, top_p 0.95.
        await using var server = await TestServer.Start();
        Assert.Equal((0.8, 40, 0.95), (server.Host.Engine!.Defaults.Temperature, server.Host.Engine.Defaults.TopK, server.Host.Engine.Defaults.TopP));
        async Task<string?> Text(object body) => (string?)(await server.Post("/v1/completions", body)).Body["choices"]![0]!["text"];
        var implicitDefaults = await Text(new { model = "tiny-poet", prompt = "春眠", max_tokens = 24, seed = 9 });
        var explicitDefaults = await Text(new { model = "tiny-poet", prompt = "春眠", max_tokens = 24, seed = 9, temperature = 0.8, top_k = 40, top_p = 0.95 });
        var overridden = await Text(new { model = "tiny-poet", prompt = "春眠", max_tokens = 24, seed = 9, temperature = 1.5, top_k = 0, top_p = 1.0 });
        Assert.Equal(explicitDefaults, implicitDefaults);
        Assert.NotEqual(implicitDefaults, overridden);
    }
}

public class EncoderServingTests
{
    [Fact]
    public async Task An_encoder_folder_serves_embeddings_as_float_or_base64_and_refuses_completions()
    {
        // The BERT fixture with the test tokenizer (400 ids, inside BERT's 512): embeddings are its mean-pooled states.
        LoadedModel Load()
        {
            var bert = ModelFolder.Load(TestModels.FixturePath("hf", "bert"));
            using var poet = TestServer.LoadFolder();
            return bert with { Tokenizer = poet.Tokenizer };
        }
        await using var server = await TestServer.Start(load: Load);
        await server.WaitReady();
        var (status, floats) = await server.Post("/v1/embeddings", new { model = "tiny-poet", input = "床前明月光" });
        Assert.Equal(200, status);
        var vector = floats["data"]![0]!["embedding"]!.AsArray().Select(v => (float)v!).ToArray();

        using var reference = Load();
        var ids = reference.Tokenizer!.Encode("床前明月光");
        var expected = SentenceEmbedding.Embed(reference.AsEncoder("test"), [ids], Pooling.Mean)[0];
        Assert.Equal(expected, vector, (a, b) => Math.Abs(a - b) < 1e-4);

        var (status64, b64) = await server.Post("/v1/embeddings", new { model = "tiny-poet", input = new[] { "床前明月光" }, encoding_format = "base64" });
        Assert.Equal(200, status64);
        var bytes = Convert.FromBase64String((string)b64["data"]![0]!["embedding"]!);
        Assert.Equal(expected, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes).ToArray());

        var (completionStatus, error) = await server.Post("/v1/completions", new { model = "tiny-poet", prompt = "春" });
        Assert.Equal(400, completionStatus);
        Assert.Contains("encoder", (string)error["error"]!["message"]!);
    }
}

public class PerRowKvCacheTests
{
    [Theory]
    [MemberData(nameof(TestModels.BothFamilies), MemberType = typeof(TestModels))]
    public void Rows_of_different_lengths_decode_together_as_they_would_alone(string family)
    {
        using var model = TestModels.Create(family);
        model.eval();
        using var _ = no_grad();
        long[][] prompts = [[1, 2, 3, 4, 5], [6, 7]];
        using var cache = model.CreateCache(2, 16);
        cache.UsePerRowLengths();
        for (int row = 0; row < 2; row++)
        {
            cache.SelectRows(row, 1);
            model.forward(tensor(prompts[row]).unsqueeze(0), cache).Dispose();
        }
        cache.SelectRows(0, 2);
        using var next = model.forward(tensor(new long[] { 9, 10 }).unsqueeze(1), cache);         // (2, 1, V)
        for (int row = 0; row < 2; row++)
        {
            using var full = model.forward(tensor([.. prompts[row], 9 + row]).unsqueeze(0));       // (1, T, V)
            Assert.True(allclose(full[0, -1], next[row, 0], rtol: 1e-4, atol: 1e-5), $"row {row} differs");
        }
        Assert.Equal(6, cache.RowLength(0));
        Assert.Equal(3, cache.RowLength(1));
    }
}
