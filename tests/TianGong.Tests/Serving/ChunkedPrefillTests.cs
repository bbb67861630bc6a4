using TianGong.Inference;
using TianGong.Inference.Serving;

namespace TianGong.Tests.Serving;

/// <summary>
/// Chunked prefill: a prompt longer than <see cref="ServingOptions.PrefillChunk"/> is prefilled over several scheduler
/// iterations, each followed by a decode step of the running sequences; its tokens are those it gets alone.
/// </summary>
public class ChunkedPrefillTests
{
    /// <summary>
    /// Allows every token and records, on the scheduler thread, which sequence chose a token when: the engine's own order
    /// of steps. With a gate, the sequence's second step holds the scheduler until the test opens it, so the requests the
    /// test submits meanwhile find this sequence still decoding however fast the machine is.
    /// </summary>
    private sealed class StepLog(string name, List<string> log, ManualResetEventSlim? gate = null) : ITokenConstraint
    {
        public string Description => $"log {name}";

        public bool[]? AllowedTokens(IReadOnlyList<int> generated)
        {
            if (generated.Count == 1 && gate is not null && !gate.Wait(TimeSpan.FromSeconds(30)))
                throw new TimeoutException("the test never opened the gate");
            lock (log) log.Add(name);
            return null;
        }

        public bool IsComplete(IReadOnlyList<int> generated) => false;
    }

    private static async Task<int[]> Collect(System.Threading.Channels.ChannelReader<CompletionChunk> reader)
    {
        var ids = new List<int>();
        await foreach (var chunk in reader.ReadAllAsync()) ids.AddRange(chunk.Tokens.Select(t => t.TokenId));
        return [.. ids];
    }

    [Fact]
    public async Task A_long_prompt_is_prefilled_in_chunks_while_running_streams_advance_and_gives_the_tokens_it_gets_alone()
    {
        using var loaded = TestServer.LoadFolder();
        var model = loaded.AsCausalLM("test");
        var tokenizer = loaded.Tokenizer!;
        var longPrompt = tokenizer.Encode(string.Concat(TestServer.Poems.Take(3)) + string.Concat(TestServer.Poems.Take(3)))[..40];
        Assert.Equal(40, longPrompt.Length);
        using var gate = new ManualResetEventSlim();
        CompletionRequest Running(List<string>? log) => new(tokenizer.Encode("春眠"), 60, Temperature: 0, IgnoreEos: true, Constraint: log is null ? null : new StepLog("running", log, gate));
        CompletionRequest Short(List<string>? log) => new(tokenizer.Encode("白日"), 20, Temperature: 0.9, Seed: 7, IgnoreEos: true, Constraint: log is null ? null : new StepLog("short", log));
        CompletionRequest Long(List<string>? log) => new(longPrompt, 12, Temperature: 0, IgnoreEos: true, Constraint: log is null ? null : new StepLog("long", log));

        // Each alone, the long prompt prefilled whole (it is shorter than the default chunk of 512).
        int[] runningAlone, shortAlone, longAlone;
        using (var engine = new ServingEngine(model, tokenizer, new ServingOptions(MaxBatch: 4)))
        {
            runningAlone = await Collect(engine.Submit(Running(null)));
            shortAlone = await Collect(engine.Submit(Short(null)));
            longAlone = await Collect(engine.Submit(Long(null)));
        }

        var log = new List<string>();
        using (var engine = new ServingEngine(model, tokenizer, new ServingOptions(MaxBatch: 4, PrefillChunk: 8)))
        {
            var running = engine.Submit(Running(log));
            var runningTokens = new List<int>();
            var first = await running.ReadAsync();                 // the running stream is decoding now
            runningTokens.AddRange(first.Tokens.Select(t => t.TokenId));
            // Admitted together in one iteration: the short prompt fits the first chunk, the long one needs 40 / 8 = 5 chunks.
            var readers = engine.SubmitAll([Short(log), Long(log)]);
            gate.Set();                                            // the running stream's second step may go on now
            runningTokens.AddRange(await Collect(running));
            Assert.Equal(runningAlone, runningTokens);
            Assert.Equal(shortAlone, await Collect(readers[0]));
            Assert.Equal(longAlone, await Collect(readers[1]));
        }

        // Before the long prompt's first token, the short stream (admitted with it) and the running stream each chose a
        // token in every iteration its chunks took: at least one per chunk after the first.
        int longFirst = log.IndexOf("long");
        int shortFirst = log.IndexOf("short");
        Assert.True(shortFirst >= 0 && longFirst > shortFirst, string.Join(",", log));
        int shortSteps = log.Take(longFirst).Count(n => n == "short");
        int runningSteps = log.Skip(shortFirst).Take(longFirst - shortFirst).Count(n => n == "running");
        Assert.True(shortSteps >= 4, $"short stream chose {shortSteps} tokens during the long prefill: {string.Join(",", log)}");
        Assert.True(runningSteps >= 4, $"running stream chose {runningSteps} tokens during the long prefill: {string.Join(",", log)}");
    }

    [Fact]
    public async Task Without_chunking_a_long_prompt_is_prefilled_in_one_iteration()
    {
        using var loaded = TestServer.LoadFolder();
        var tokenizer = loaded.Tokenizer!;
        var longPrompt = tokenizer.Encode(string.Concat(TestServer.Poems.Take(3)) + string.Concat(TestServer.Poems.Take(3)))[..40];
        var log = new List<string>();
        using var engine = new ServingEngine(loaded.AsCausalLM("test"), tokenizer, new ServingOptions(MaxBatch: 4, PrefillChunk: 64));
        var readers = engine.SubmitAll([
            new CompletionRequest(tokenizer.Encode("白日"), 5, Temperature: 0, IgnoreEos: true, Constraint: new StepLog("short", log)),
            new CompletionRequest(longPrompt, 5, Temperature: 0, IgnoreEos: true, Constraint: new StepLog("long", log))]);
        foreach (var r in readers) Assert.Equal(5, (await Collect(r)).Length);
        // Both prompts fit one chunk: both first tokens come from the same prefill pass.
        Assert.Equal(["short", "long"], log.Take(2));
    }

    [Fact]
    public void A_prefill_chunk_below_one_is_refused()
    {
        var error = Assert.Throws<TianGongException>(() => new ServingOptions(PrefillChunk: 0).Validate());
        Assert.Contains("prefill_chunk", error.Message);
    }
}
