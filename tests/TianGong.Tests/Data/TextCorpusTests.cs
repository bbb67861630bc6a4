using Xunit;
using TianGong.Data;

namespace TianGong.Tests.Data;

public sealed class TextCorpusTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    [Fact]
    public void PlainTextSplitsOnBlankLinesAndKeepsLineBreaksInside()
    {
        var file = temp.Combine("a.txt");
        File.WriteAllText(file, "\n第一行\r\n第二行\n\n  \n\n第三段\n");

        Assert.Equal(["第一行\n第二行", "第三段"], new TextCorpus(file).ToList());
    }

    [Fact]
    public void JsonLinesReadTheConfiguredFieldAndSkipBlanks()
    {
        var file = temp.Combine("a.jsonl");
        File.WriteAllText(file, "{\"content\":\"一\\n二\",\"id\":1}\n\n{\"content\":\"\"}\n{\"content\":\"三\"}\n");

        Assert.Equal(["一\n二", "三"], new TextCorpus(file, new TextCorpusOptions("content")).ToList());
    }

    [Fact]
    public void JsonLinesWithoutTheFieldNameFileAndLine()
    {
        var file = temp.Combine("b.jsonl");
        File.WriteAllText(file, "{\"text\":\"ok\"}\n{\"body\":\"x\"}\n");

        var error = Assert.Throws<TianGongException>(() => new TextCorpus(file).ToList());

        Assert.Contains("b.jsonl", error.Message);
        Assert.Contains("line 2", error.Message);
    }

    [Fact]
    public void DirectoryReadsTextAndJsonLinesFilesInPathOrder()
    {
        Directory.CreateDirectory(temp.Combine("sub"));
        File.WriteAllText(temp.Combine("b.txt"), "乙");
        File.WriteAllText(temp.Combine("a.jsonl"), "{\"text\":\"甲\"}");
        File.WriteAllText(temp.Combine("sub", "c.txt"), "丙");
        File.WriteAllText(temp.Combine("notes.md"), "不读");

        Assert.Equal(["甲", "乙", "丙"], new TextCorpus(temp.Path).ToList());
    }
}
