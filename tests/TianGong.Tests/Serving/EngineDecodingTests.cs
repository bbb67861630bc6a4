using TianGong.Inference;
using TianGong.Inference.Serving;

namespace TianGong.Tests.Serving;

/// <summary>The serving engine on the shared decoding core: same tokens as the CLI generator, and one request's trouble stays its own.</summary>
public class EngineDecodingTests
{
    private static async Task<(int[] Ids, string? Finish)> Collect(System.Threading.Channels.ChannelReader<CompletionChunk> reader)
    {
        var ids = new List<int>();
        string? finish = null;
        await foreach (var chunk in reader.ReadAllAsync())
        {
            ids.AddRange(chunk.Tokens.Select(t => t.TokenId));
            finish = chunk.FinishReason ?? finish;
        }
        return ([.. ids], finish);
    }

    [Fact]
    public async Task The_engine_and_the_text_generator_choose_the_same_tokens_greedy_and_seeded()
    {
        using var loaded = TestServer.LoadFolder();
        var model = loaded.AsCausalLM("test");
        var tokenizer = loaded.Tokenizer!;
        var prompt = tokenizer.Encode("床前");
        var generator = new TextGenerator(model, tokenizer);
        var greedy = generator.GenerateIds([prompt], new SamplingOptions(MaxNewTokens: 12, Temperature: 0))[0];
        var seeded = generator.GenerateIds([prompt], new SamplingOptions(MaxNewTokens: 12, Temperature: 1.2, TopP: 0.9, Seed: 4))[0];

        using var engine = new ServingEngine(model, tokenizer, new ServingOptions(MaxBatch: 4));
        var engineGreedy = await Collect(engine.Submit(new CompletionRequest(prompt, 12, Temperature: 0)));
        var engineSeeded = await Collect(engine.Submit(new CompletionRequest(prompt, 12, Temperature: 1.2, TopP: 0.9, Seed: 4)));
        Assert.Equal(greedy.Generated, engineGreedy.Ids);
        Assert.Equal(seeded.Generated, engineSeeded.Ids);
        Assert.NotEqual(greedy.Generated, seeded.Generated);
    }

    [Fact]
    public async Task A_tiny_temperature_is_greedy_and_does_not_fail_its_neighbours()
    {
        using var loaded = TestServer.LoadFolder();
        using var engine = new ServingEngine(loaded.AsCausalLM("test"), loaded.Tokenizer!, new ServingOptions(MaxBatch: 4));
        var prompt = loaded.Tokenizer!.Encode("春眠");
        var alone = await Collect(engine.Submit(new CompletionRequest(prompt, 20, Temperature: 1.0, Seed: 3)));
        var greedy = await Collect(engine.Submit(new CompletionRequest(prompt, 20, Temperature: 0)));
        var tiny = engine.Submit(new CompletionRequest(prompt, 20, Temperature: 1e-300, Seed: 1));
        var neighbour = engine.Submit(new CompletionRequest(prompt, 20, Temperature: 1.0, Seed: 3));
        Assert.Equal(greedy.Ids, (await Collect(tiny)).Ids);
        Assert.Equal(alone.Ids, (await Collect(neighbour)).Ids);
    }

    [Fact]
    public async Task A_request_whose_sampling_fails_fails_alone()
    {
        using var loaded = TestServer.LoadFolder();
        var tokenizer = loaded.Tokenizer!;
        using var engine = new ServingEngine(loaded.AsCausalLM("test"), tokenizer, new ServingOptions(MaxBatch: 4));
        var prompt = tokenizer.Encode("白日");
        var alone = await Collect(engine.Submit(new CompletionRequest(prompt, 16, Temperature: 0.8, Seed: 2)));
        var broken = engine.Submit(new CompletionRequest(prompt, 16, Temperature: 0.8, Seed: 1, Constraint: new NothingAfter(3, tokenizer.VocabSize)));
        var neighbour = engine.Submit(new CompletionRequest(prompt, 16, Temperature: 0.8, Seed: 2));
        var error = await Assert.ThrowsAsync<TianGongException>(() => Collect(broken));
        Assert.Contains("nothing-after-3: no token of the vocabulary can come next after 3 generated tokens", error.Message);
        Assert.Equal(alone.Ids, (await Collect(neighbour)).Ids);
    }

    [Fact]
    public async Task Prompts_of_different_lengths_prefilled_together_decode_as_each_alone()
    {
        using var loaded = TestServer.LoadFolder();
        var model = loaded.AsCausalLM("test");
        var tokenizer = loaded.Tokenizer!;
        string[] texts = ["床", "春眠不觉晓，处处闻啼鸟", "白日依山尽", "床前明月光，疑是地上霜。举头望明月"];
        var requests = texts.Select((text, i) => new CompletionRequest(tokenizer.Encode(text), 10, Temperature: i % 2 == 0 ? 0 : 1.1, Seed: i, IgnoreEos: true)).ToArray();
        Assert.True(requests.Select(r => r.PromptIds.Length).Distinct().Count() == texts.Length, "the prompts need different lengths");
        var alone = new List<int[]>();
        using (var engine = new ServingEngine(model, tokenizer, new ServingOptions(MaxBatch: 8)))
            foreach (var r in requests) alone.Add((await Collect(engine.Submit(r))).Ids);
        using (var engine = new ServingEngine(model, tokenizer, new ServingOptions(MaxBatch: 8)))
        {
            // Submitted as one batch, all four are admitted together: one right-padded prefill, then decoding side by side.
            var together = await Task.WhenAll(engine.SubmitAll(requests).Select(Collect));
            for (int i = 0; i < requests.Length; i++) Assert.Equal(alone[i], together[i].Ids);
            Assert.All(together, t => Assert.Equal(10, t.Ids.Length));
        }
    }

    [Fact]
    public async Task A_cancelled_request_stops_at_the_next_step()
    {
        using var loaded = TestServer.LoadFolder();
        using var engine = new ServingEngine(loaded.AsCausalLM("test"), loaded.Tokenizer!, new ServingOptions(MaxBatch: 2));
        using var cancel = new CancellationTokenSource();
        // Greedy (top_k 1): this random model does not pick end-of-text, so only the cancel can end it early.
        var reader = engine.Submit(new CompletionRequest(loaded.Tokenizer!.Encode("春眠"), 490, TopK: 1, Seed: 1), cancel.Token);
        await reader.ReadAsync();
        cancel.Cancel();
        string? finish = null;
        await foreach (var chunk in reader.ReadAllAsync()) finish ??= chunk.FinishReason;
        Assert.Null(finish);                                      // a cancelled stream just closes: no "stop", no "length"
        Assert.InRange(engine.Metrics.Read().CompletionTokens, 1, 399);
    }

    /// <summary>
    /// Chunks leave the scheduler in one pool work item per phase; with readersRunInline the readers run on it. Either way
    /// every stream gets its own tokens in order, each exactly once, ends with its finish reason, and is complete when
    /// Dispose returns (even one whose reader never read).
    /// </summary>
    [Fact]
    public async Task Streams_delivered_in_batches_keep_their_tokens_in_order_inline_or_not()
    {
        using var loaded = TestServer.LoadFolder();
        var tokenizer = loaded.Tokenizer!;
        var prompt = tokenizer.Encode("白日");
        var requests = Enumerable.Range(0, 6).Select(i => new CompletionRequest(prompt, 9 + i, Temperature: 1.0, Seed: i, IgnoreEos: true)).ToArray();
        var reference = new List<(int[] Ids, string? Finish)>();
        var engine = new ServingEngine(loaded.AsCausalLM("test"), tokenizer, new ServingOptions(MaxBatch: 4));
        try
        {
            foreach (var r in requests) reference.Add(await Collect(engine.Submit(r)));
            var inline = await Task.WhenAll(engine.SubmitAll(requests, readersRunInline: true).Select(Collect));
            var queued = await Task.WhenAll(engine.SubmitAll(requests).Select(Collect));
            for (int i = 0; i < requests.Length; i++)
            {
                Assert.Equal(9 + i, reference[i].Ids.Length);
                Assert.Equal("length", reference[i].Finish);
                Assert.Equal(reference[i].Ids, inline[i].Ids);
                Assert.Equal(reference[i].Ids, queued[i].Ids);
                Assert.Equal("length", inline[i].Finish);
                Assert.Equal("length", queued[i].Finish);
            }
            var unread = engine.SubmitAll(requests[..2], readersRunInline: true);
            engine.Dispose();
            for (int i = 0; i < unread.Count; i++)
            {
                var ids = new List<int>();
                while (unread[i].TryRead(out var chunk)) ids.AddRange(chunk.Tokens.Select(t => t.TokenId));
                Assert.True(unread[i].Completion.IsCompleted);      // written and closed before Dispose returned
                Assert.Equal(reference[i].Ids, ids);
            }
        }
        finally { engine.Dispose(); }
    }

    private sealed class NothingAfter(int count, int vocab) : ITokenConstraint
    {
        public string Description => $"nothing-after-{count}";
        public bool[]? AllowedTokens(IReadOnlyList<int> generated) => generated.Count < count ? null : new bool[vocab];
        public bool IsComplete(IReadOnlyList<int> generated) => false;
    }
}
