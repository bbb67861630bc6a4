using TianGong.Inference;
using TianGong.Poetry;
using TianGong.Tokenizers;

namespace TianGong.Tests.Inference;

public class GenerationTests
{
    private static readonly string[] Poems =
    [
        "春眠不覺曉，處處聞啼鳥。\n夜來風雨聲，花落知多少。",
        "床前明月光，疑是地上霜。\n舉頭望明月，低頭思故鄉。",
        "白日依山盡，黃河入海流。\n欲窮千里目，更上一層樓。",
        "天工開物，秋月春風。\n工於詩書，開門見山。\n物華天寶，人傑地靈。",
    ];

    private static ByteLevelBpeTokenizer Tokenizer() =>
        ByteLevelBpeTrainer.Train(Enumerable.Repeat(Poems, 20).SelectMany(p => p), new BpeTrainerOptions(VocabSize: 400, MinFrequency: 2));

    [Fact]
    public void Greedy_decoding_picks_the_argmax_of_a_full_forward_pass_each_step()
    {
        var tokenizer = Tokenizer();
        using var model = TestModels.Create("llama", vocab: tokenizer.VocabSize);
        var generator = new TextGenerator(model, tokenizer);
        int[] prompt = tokenizer.Encode("春眠");
        var result = generator.GenerateIds([prompt], new SamplingOptions(MaxNewTokens: 12, Temperature: 0, StopAtEos: false))[0];

        var ids = prompt.ToList();
        using (no_grad())
            for (int i = 0; i < 12; i++)
            {
                using var logits = model.forward(tensor(ids.Select(x => (long)x).ToArray()).unsqueeze(0));
                ids.Add((int)logits[0, -1].argmax().item<long>());
            }
        Assert.Equal(ids.Skip(prompt.Length), result.Generated);
        Assert.Equal("length", result.FinishReason);
    }

    [Fact]
    public void The_same_seed_gives_the_same_sample_and_another_seed_a_different_one()
    {
        var tokenizer = Tokenizer();
        using var model = TestModels.Create("gpt2", vocab: tokenizer.VocabSize);
        var generator = new TextGenerator(model, tokenizer);
        var options = new SamplingOptions(MaxNewTokens: 30, Temperature: 1.5, Seed: 11, StopAtEos: false);
        var a = generator.Generate("床前", options);
        var b = generator.Generate("床前", options);
        var c = generator.Generate("床前", options with { Seed = 12 });
        Assert.Equal(a.TokenIds, b.TokenIds);
        Assert.NotEqual(a.TokenIds, c.TokenIds);
    }

    [Fact]
    public void Top_k_of_one_is_greedy_and_batched_rows_match_single_runs()
    {
        var tokenizer = Tokenizer();
        using var model = TestModels.Create("llama", vocab: tokenizer.VocabSize);
        var generator = new TextGenerator(model, tokenizer);
        int[] p1 = tokenizer.Encode("白日"), p2 = tokenizer.Encode("黃河");
        Assert.Equal(p1.Length, p2.Length);
        var greedy = new SamplingOptions(MaxNewTokens: 10, Temperature: 0, StopAtEos: false);
        var topOne = new SamplingOptions(MaxNewTokens: 10, Temperature: 1, TopK: 1, Seed: 3, StopAtEos: false);
        var single1 = generator.GenerateIds([p1], greedy)[0].Generated;
        var single2 = generator.GenerateIds([p2], greedy)[0].Generated;
        var batched = generator.GenerateIds([p1, p2], greedy);
        Assert.Equal(single1, generator.GenerateIds([p1], topOne)[0].Generated);
        Assert.Equal(single1, batched[0].Generated);
        Assert.Equal(single2, batched[1].Generated);
    }

    [Fact]
    public void Seeded_rows_of_a_batch_sample_what_each_prompt_samples_alone()
    {
        var tokenizer = Tokenizer();
        using var model = TestModels.Create("llama", vocab: tokenizer.VocabSize);
        var generator = new TextGenerator(model, tokenizer);
        int[] p1 = tokenizer.Encode("白日"), p2 = tokenizer.Encode("黃河");
        var options = new SamplingOptions(MaxNewTokens: 16, Temperature: 1.3, TopP: 0.95, Seed: 8, StopAtEos: false);
        var batched = generator.GenerateIds([p1, p2], options);
        Assert.Equal(generator.GenerateIds([p1], options)[0].Generated, batched[0].Generated);
        Assert.Equal(generator.GenerateIds([p2], options)[0].Generated, batched[1].Generated);
    }

    [Fact]
    public void Min_new_tokens_holds_back_end_of_text()
    {
        var tokenizer = Tokenizer();
        using var model = TestModels.Create("gpt2", vocab: tokenizer.VocabSize);
        // Teach it that "春" is followed by end-of-text, so without min_new_tokens the first token ends the text.
        var spring = tokenizer.Encode("春");
        using (var data = tensor(spring.Append(tokenizer.EosId).Select(i => (long)i).ToArray()).unsqueeze(0))
        using (var optimizer = new TianGong.Training.AdamW(model.named_parameters(), new(WeightDecay: 0), new HashSet<string>()))
            for (int step = 0; step < 40; step++)
            {
                using var scope = NewDisposeScope();
                TianGong.Training.LanguageModeling.Loss(model.forward(data[.., ..^1]), data[.., 1..]).backward();
                optimizer.Step(1e-2);
                optimizer.ZeroGrad();
            }
        var generator = new TextGenerator(model, tokenizer);
        var eager = generator.GenerateIds([tokenizer.Encode("春")], new SamplingOptions(MaxNewTokens: 30, Temperature: 0))[0];
        var held = generator.GenerateIds([tokenizer.Encode("春")], new SamplingOptions(MaxNewTokens: 30, Temperature: 0, MinNewTokens: 12))[0];
        Assert.True(eager.Generated.Length < 12, $"without min_new_tokens: {eager.Generated.Length} tokens");
        Assert.True(held.Generated.Length >= 12, $"with min_new_tokens 12: {held.Generated.Length} tokens");
        Assert.DoesNotContain(tokenizer.EosId, held.Generated);
    }

    [Fact]
    public void Stop_strings_end_generation_and_are_cut_from_the_text()
    {
        var tokenizer = Tokenizer();
        using var model = TestModels.Create("gpt2", vocab: tokenizer.VocabSize);
        var generator = new TextGenerator(model, tokenizer);
        var free = generator.Generate("春", new SamplingOptions(MaxNewTokens: 20, Temperature: 0, StopAtEos: false));
        Assert.True(free.Text.Length >= 2);
        var stop = free.Text.Substring(1, 1);
        var cut = generator.Generate("春", new SamplingOptions(MaxNewTokens: 20, Temperature: 0, StopAtEos: false, StopStrings: [stop]));
        Assert.Equal("stop", cut.FinishReason);
        Assert.Equal(free.Text[..free.Text.IndexOf(stop, StringComparison.Ordinal)], cut.Text);
    }

    [Theory]
    [InlineData("天工開物")]
    [InlineData("春月")]
    public void Acrostic_lines_start_with_the_requested_characters(string heads)
    {
        var tokenizer = Tokenizer();
        using var model = TestModels.Create("llama", vocab: tokenizer.VocabSize, seed: 5);
        TrainBriefly(model, tokenizer); // an untrained model almost never ends a line, so it would run out of tokens
        var generator = new TextGenerator(model, tokenizer);
        var result = generator.Generate(heads + "\n", new SamplingOptions(MaxNewTokens: 200, Temperature: 1.0, Seed: 1),
            new AcrosticConstraint(tokenizer, heads));
        var lines = result.Text.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("stop", result.FinishReason);
        Assert.Equal(heads.Length, lines.Length);
        for (int i = 0; i < heads.Length; i++)
            Assert.StartsWith(heads[i].ToString(), lines[i]);
    }

    private static void TrainBriefly(TianGong.Models.CausalLM model, ByteLevelBpeTokenizer tokenizer)
    {
        using var optimizer = new TianGong.Training.AdamW(model.named_parameters(), new(WeightDecay: 0), new HashSet<string>());
        for (int step = 0; step < 30; step++)
            foreach (var poem in Poems)
            {
                using var scope = NewDisposeScope();
                var data = tensor(tokenizer.Encode(poem).Append(tokenizer.EosId).Select(i => (long)i).ToArray()).unsqueeze(0);
                var loss = TianGong.Training.LanguageModeling.Loss(model.forward(data[.., ..^1]), data[.., 1..]);
                loss.backward();
                optimizer.Step(1e-2);
                optimizer.ZeroGrad();
            }
    }

    [Fact]
    public void Acrostic_with_a_character_no_token_can_start_is_a_clear_error()
    {
        // A byte-level vocabulary can spell any character byte by byte; this one has no bytes of 龍 at all.
        var tokenizer = TianGong.Tests.Poetry.ListTokenizer.Of("a", "b", "\n");
        var e = Assert.Throws<TianGongException>(() => new AcrosticConstraint(tokenizer, "龍"));
        Assert.Contains("no token of the vocabulary starts with '龍' or a part of it", e.Message);
    }

    [Fact]
    public void Logits_filters_keep_what_they_promise()
    {
        using var logits = tensor(new float[] { 1, 4, 2, 3 }).unsqueeze(0);
        using var k2 = LogitsProcessing.ApplyTopK(logits, 2);
        Assert.Equal(new[] { false, true, false, true }, k2[0].isfinite().data<bool>().ToArray());
        // softmax([1,4,2,3]) ≈ [.03, .64, .09, .24]: p = 0.7 keeps 4 and 3, p = 0.5 keeps only 4.
        using var p7 = LogitsProcessing.ApplyTopP(logits, 0.7);
        Assert.Equal(new[] { false, true, false, true }, p7[0].isfinite().data<bool>().ToArray());
        using var p5 = LogitsProcessing.ApplyTopP(logits, 0.5);
        Assert.Equal(new[] { false, true, false, false }, p5[0].isfinite().data<bool>().ToArray());
        using var penalized = LogitsProcessing.ApplyRepetitionPenalty(tensor(new float[] { 2, -2, 1 }).unsqueeze(0), tensor(new long[] { 0, 1 }).unsqueeze(0), 2.0);
        Assert.Equal(new float[] { 1, -4, 1 }, penalized[0].data<float>().ToArray());
    }
}
