using TianGong.Inference;
using TianGong.Inference.Serving;

namespace TianGong.Tests.Serving;

/// <summary>vLLM's ignore_eos and min_tokens, which serving benchmarks send.</summary>
public class EngineFieldTests
{
    [Fact]
    public async Task Ignore_eos_decodes_past_the_end_of_sequence_token_and_min_tokens_holds_it_back()
    {
        using var loaded = TestServer.LoadFolder();
        var tokenizer = loaded.Tokenizer!;
        var prompt = tokenizer.Encode("春眠");
        int first;
        using (var plain = new ServingEngine(loaded.AsCausalLM("test"), tokenizer, new ServingOptions(MaxBatch: 2)))
            first = (await plain.Submit(new CompletionRequest(prompt, 1, Temperature: 0)).ReadAllAsync().ToListAsync())[0].Tokens[0].TokenId;
        // A folder whose generation_config.json names the greedy first token as end-of-sequence: a greedy request ends at once.
        using var engine = new ServingEngine(loaded.AsCausalLM("test"), tokenizer, new ServingOptions(MaxBatch: 2), new GenerationConfig(EosTokenId: [first]));
        async Task<(int Tokens, string? Reason)> Run(CompletionRequest r)
        {
            var chunks = await engine.Submit(r).ReadAllAsync().ToListAsync();
            return (chunks.Sum(c => c.Tokens.Count), chunks[^1].FinishReason);
        }
        Assert.Equal((0, "stop"), await Run(new CompletionRequest(prompt, 6, Temperature: 0))); // the end-of-sequence token is not output
        Assert.Equal((6, "length"), await Run(new CompletionRequest(prompt, 6, Temperature: 0, IgnoreEos: true)));
        var held = await Run(new CompletionRequest(prompt, 6, Temperature: 0, MinTokens: 3));
        Assert.True(held.Tokens >= 3, $"min_tokens 3 let the sequence end after {held.Tokens}");
    }
}
