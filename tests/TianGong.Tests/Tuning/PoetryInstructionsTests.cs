using TianGong.Poetry;
using TianGong.Tuning.Data;
using Xunit;

namespace TianGong.Tests.Tuning;

public sealed class PoetryInstructionsTests
{
    private static readonly Poem Jueju = new("靜夜思", "李白", ["床前明月光，疑是地上霜。", "舉頭望明月，低頭思故鄉。"]);
    private static readonly Poem OneLine = new("殘句", null, ["一片冰心在玉壺。"]);

    private static List<Poem> Corpus(int n) =>
        Enumerable.Range(0, n).Select(i => new Poem($"題{i}", i % 3 == 0 ? null : $"作者{i}",
            i % 2 == 0 ? ["春眠不覺曉，處處聞啼鳥。", "夜來風雨聲，花落知多少。"] : [$"第{i}句。"])).ToList();

    [Fact]
    public void Each_kind_asks_and_answers_from_the_poem()
    {
        var title = PoetryInstructions.Conversation(Jueju, PoetryInstructionKind.Title);
        Assert.Equal(("user", "寫一首《靜夜思》。"), (title[0].Role, title[0].Content));
        Assert.Equal(("assistant", "床前明月光，疑是地上霜。\n舉頭望明月，低頭思故鄉。"), (title[1].Role, title[1].Content));

        var next = PoetryInstructions.Conversation(Jueju, PoetryInstructionKind.Continue);
        Assert.Equal("續寫這首詩：\n床前明月光，疑是地上霜。", next[0].Content);
        Assert.Equal("舉頭望明月，低頭思故鄉。", next[1].Content);

        // The acrostic's characters are the first characters of the four verse lines (half-couplets).
        var acrostic = PoetryInstructions.Conversation(Jueju, PoetryInstructionKind.Acrostic);
        Assert.Equal("寫一首藏頭詩，每句的第一個字依次是「床疑舉低」。", acrostic[0].Content);

        var author = PoetryInstructions.Conversation(Jueju, PoetryInstructionKind.Author);
        Assert.StartsWith("下面這首詩的作者是誰？\n《靜夜思》\n床前明月光", author[0].Content);
        Assert.Equal("李白", author[1].Content);
    }

    [Fact]
    public void A_poem_gets_only_the_kinds_it_can_serve()
    {
        Assert.Equal([PoetryInstructionKind.Title, PoetryInstructionKind.Continue, PoetryInstructionKind.Acrostic, PoetryInstructionKind.Author],
            PoetryInstructions.KindsFor(Jueju));
        Assert.Equal([PoetryInstructionKind.Title], PoetryInstructions.KindsFor(OneLine));
        Assert.Throws<TianGongException>(() => PoetryInstructions.Conversation(OneLine, PoetryInstructionKind.Author));
        Assert.Throws<TianGongException>(() => PoetryInstructions.Conversation(OneLine, PoetryInstructionKind.Continue));
    }

    [Fact]
    public void The_sample_is_seeded_sized_in_corpus_order_and_uses_every_kind()
    {
        var poems = Corpus(400);
        var a = PoetryInstructions.Build(poems, 100, seed: 5);
        var b = PoetryInstructions.Build(poems, 100, seed: 5);
        var c = PoetryInstructions.Build(poems, 100, seed: 6);
        Assert.Equal(100, a.Count);
        Assert.Equal(Flatten(a), Flatten(b));
        Assert.NotEqual(Flatten(a), Flatten(c));
        // Every kind appears, and none where the poem can't serve it (the one-line poems have no acrostic or continuation).
        var openings = a.Select(conversation => conversation[0].Content[..3]).ToHashSet();
        Assert.Equal(new HashSet<string> { "寫一首", "續寫這", "下面這" }, openings);
        Assert.Contains(a, conv => conv[0].Content.StartsWith("寫一首藏頭詩"));
        Assert.All(a.Where(conv => conv[0].Content.StartsWith("續寫")), conv => Assert.Contains("春眠", conv[0].Content));
        // The sample does not depend on more poems coming after it: a bottom-k sample of the hashes.
        Assert.Equal(100, PoetryInstructions.Build(poems.Take(100), 500, seed: 5).Count);
        Assert.Throws<TianGongException>(() => PoetryInstructions.Build(poems, 0, seed: 5));
        // Poems longer than maxChars are left out: the one-line poems (at most 10 characters with their titles) stay, the jueju (over 24) go.
        Assert.All(PoetryInstructions.Build(poems, 50, seed: 5, maxChars: 10), conv => Assert.DoesNotContain("春眠", conv[0].Content + conv[1].Content));
    }

    [Fact]
    public void The_written_file_reads_back_as_chat_data()
    {
        var path = Path.Combine(TestModels.TempDir(), "poetry.jsonl");
        var conversations = PoetryInstructions.Build(Corpus(30), 20, seed: 1);
        PoetryInstructions.Write(path, conversations);
        var rows = ChatRows.Read(path);
        Assert.Equal(Flatten(conversations), Flatten(rows.Select(r => r.Messages).ToList()));
        Assert.Contains("寫一首", File.ReadAllText(path)); // Chinese kept as text, not \u escapes
    }

    private static List<string> Flatten(IReadOnlyList<IReadOnlyList<TianGong.Tokenizers.ChatMessage>> conversations) =>
        conversations.SelectMany(c => c.Select(m => m.Role + ":" + m.Content)).ToList();
}
