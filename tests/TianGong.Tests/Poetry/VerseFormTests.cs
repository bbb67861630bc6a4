using System.Text;
using TianGong.Inference;
using TianGong.Poetry;
using TianGong.Tokenizers;

namespace TianGong.Tests.Poetry;

public class VerseFormTests
{
    private static readonly string[] Poems =
    [
        "春眠不覺曉，處處聞啼鳥。\n夜來風雨聲，花落知多少。",
        "床前明月光，疑是地上霜。\n舉頭望明月，低頭思故鄉。",
        "白日依山盡，黃河入海流。\n欲窮千里目，更上一層樓。",
        "天工開物，秋月春風。\n工於詩書，開門見山。\n物華天寶，人傑地靈。",
    ];

    // 春 is E6 98 A5, ， is EF BC 8C, 。 is E3 80 82: ids 3, 4 and 12 hold parts of a character.
    private static readonly ListTokenizer Hand = new(
        Utf8("春"), Utf8("眠"), Utf8("春眠"), [0xE6], [0x98, 0xA5], Utf8("，"), Utf8("。"), Utf8("\n"), Utf8("，\n"), Utf8("。\n"),
        Utf8("a"), Utf8("。\n春"), [0xEF], Utf8("不覺曉"));

    private static byte[] Utf8(string s) => Encoding.UTF8.GetBytes(s);

    private static int[] Allowed(ITokenConstraint c, params int[] generated) =>
        [.. c.AllowedTokens(generated)!.Select((a, id) => (a, id)).Where(x => x.a).Select(x => x.id)];

    [Fact]
    public void Tokens_are_allowed_exactly_when_their_bytes_continue_the_form()
    {
        var form = new VerseFormConstraint(Hand, VerseForm.Jueju5);
        Assert.Equal([0, 1, 2, 3, 12, 13], Allowed(form));                // a line starts with Han characters, also part of one (EF may begin U+F900)
        Assert.Equal([4], Allowed(form, 3));                               // E6 can only be finished (98 A5), not followed by 春
        int[] fiveCharacters = [2, 13];                                    // 春眠 + 不覺曉
        Assert.Equal([5, 8, 12], Allowed(form, fiveCharacters));           // the first line's ， (or its first byte), not 。
        Assert.Equal([7], Allowed(form, [.. fiveCharacters, 5]));          // after the mark only the newline
        int[] firstLine = [.. fiveCharacters, 8];
        Assert.Equal([6, 9, 11], Allowed(form, [.. firstLine, .. fiveCharacters])); // the second line ends with 。, and may run into the third
        int[] threeLines = [.. firstLine, .. fiveCharacters, 9, .. fiveCharacters, 8];
        Assert.Equal([6, 9], Allowed(form, [.. threeLines, .. fiveCharacters]));    // nothing may follow the last newline
        int[] poem = [.. threeLines, .. fiveCharacters, 9];
        Assert.Null(form.AllowedTokens(poem));
        Assert.True(form.IsComplete(poem));
        Assert.False(form.IsComplete(threeLines));
        Assert.True(VerseForm.Jueju5.Matches(Hand.Decode(poem)));
    }

    [Fact]
    public void Acrostic_and_form_together_allow_what_both_allow()
    {
        var tokens = new TokenByteTable(Hand);
        var both = new AllOfConstraint([new VerseFormConstraint(tokens, VerseForm.Jueju5), new AcrosticConstraint(tokens, "眠春")]);
        Assert.Equal([1], Allowed(both));                                  // the form allows 春, 春眠, E6, 不覺曉; the acrostic only 眠
        Assert.Equal([0, 2, 3], Allowed(both, [.. new[] { 1, 13, 0 }, 8])); // line 2 starts with 春, or its first byte
        Assert.Equal("acrostic 眠春", new AcrosticConstraint(tokens, "眠春").Description);
        Assert.Contains("form jueju5", both.Description);
    }

    [Fact]
    public void A_vocabulary_that_cannot_write_the_form_is_a_clear_error()
    {
        var e = Assert.Throws<TianGongException>(() => new VerseFormConstraint(ListTokenizer.Of("a", "，", "\n"), VerseForm.Jueju5));
        Assert.Contains("no token of the vocabulary begins with a Han character", e.Message);

        // Everything but 。: the second line can never end, which the decoding core reports instead of sampling from nothing.
        var tokenizer = ListTokenizer.Of("春", "，", "\n");
        using var model = TestModels.Create("llama", vocab: tokenizer.VocabSize);
        var generator = new TextGenerator(model, tokenizer);
        var error = Assert.Throws<TianGongException>(() => generator.GenerateIds([[0]], new SamplingOptions(MaxNewTokens: 40, Temperature: 0),
            new VerseFormConstraint(tokenizer, VerseForm.Jueju5)));
        Assert.Contains("form jueju5: no token of the vocabulary can come next after 12 generated tokens", error.Message);
    }

    [Fact]
    public void Poem_constraints_refuse_an_acrostic_the_form_cannot_hold()
    {
        var tokenizer = BpeTokenizer(400);
        Assert.Contains("5 characters, but a jueju7 poem has 4 lines",
            Assert.Throws<TianGongException>(() => PoemConstraint.Create(tokenizer, VerseForm.Jueju7, "天工開物春")).Message);
        Assert.Contains("'a' is not a Han character", Assert.Throws<TianGongException>(() => PoemConstraint.Create(tokenizer, VerseForm.Lushi5, "天a")).Message);
        Assert.Contains("unknown verse form 'jueju6' (known forms: jueju5, jueju7, lushi5, lushi7)", Assert.Throws<TianGongException>(() => VerseForm.Parse("jueju6")).Message);
        Assert.Null(PoemConstraint.Create(tokenizer, null, null));
        Assert.IsType<AcrosticConstraint>(PoemConstraint.Create(tokenizer, null, "天"));
    }

    public static IEnumerable<object[]> Forms() => VerseForm.All.Select(f => new object[] { f.Name });

    [Theory]
    [MemberData(nameof(Forms))]
    public void A_model_writes_every_form_and_its_couplets_are_regulated_verse_of_the_corpus(string name)
    {
        var form = VerseForm.Parse(name);
        var tokenizer = BpeTokenizer(400);
        using var model = LongContextModel(tokenizer.VocabSize, seed: 3);
        var result = new TextGenerator(model, tokenizer).Generate("春夜\n",
            new SamplingOptions(MaxNewTokens: PoemConstraint.TokenBudget(form), Temperature: 1.0, Seed: 7), PoemConstraint.Create(tokenizer, form, null));
        Assert.Equal("stop", result.FinishReason);
        Assert.True(form.Matches(result.Text), result.Text);
        var lines = result.Text.TrimEnd('\n').Split('\n');
        var couplets = Enumerable.Range(0, lines.Length / 2).Select(i => lines[2 * i] + lines[2 * i + 1]).ToList();
        Assert.True(RegulatedVerse.Matches(couplets, form.CorpusForm), result.Text);
    }

    [Fact]
    public void With_an_acrostic_character_i_begins_line_i_even_when_tokens_split_characters()
    {
        // 262 ids: the 256 bytes and a few merges, so most characters are written one byte at a time.
        var tokenizer = BpeTokenizer(262);
        Assert.True(tokenizer.Encode("夜來風雨").Length > 4);
        using var model = LongContextModel(tokenizer.VocabSize, seed: 9);
        var result = new TextGenerator(model, tokenizer).Generate("題\n",
            new SamplingOptions(MaxNewTokens: PoemConstraint.TokenBudget(VerseForm.Jueju7), Temperature: 1.0, Seed: 2),
            PoemConstraint.Create(tokenizer, VerseForm.Jueju7, "天工開物"));
        Assert.Equal("stop", result.FinishReason);
        Assert.True(VerseForm.Jueju7.Matches(result.Text), result.Text);
        var lines = result.Text.Split('\n');
        for (int i = 0; i < 4; i++) Assert.StartsWith("天工開物"[i].ToString(), lines[i]);
    }

    // Room for a 律詩 written byte by byte (the test models' 64 positions are not).
    private static TianGong.Models.CausalLM LongContextModel(int vocab, long seed)
    {
        manual_seed(seed);
        var model = TianGong.Models.ModelConfigs.CreateCausalLM(TestModels.Gpt2(vocab) with { NPositions = 320 });
        model.InitializeWeights();
        return model;
    }

    private static ByteLevelBpeTokenizer BpeTokenizer(int vocab) =>
        ByteLevelBpeTrainer.Train(Enumerable.Repeat(Poems, 20).SelectMany(p => p), new BpeTrainerOptions(VocabSize: vocab, MinFrequency: 2));
}
