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

    [Fact]
    public void EmptyDevNullAndNonUtf8CorporaAreRefusedWithTheReason()
    {
        var empty = temp.Combine("empty.txt");
        File.WriteAllBytes(empty, []);
        Assert.Contains("is empty (0 bytes)", Assert.Throws<TianGongException>(() => new TextCorpus(empty)).Message);
        Assert.Contains("is a character device", Assert.Throws<TianGongException>(() => new TextCorpus("/dev/null")).Message);
        Assert.Contains("Every corpus file", Assert.Throws<TianGongException>(() => new TextCorpus(temp.Path)).Message);

        var gbk = temp.Combine("gbk.txt");
        File.WriteAllBytes(gbk, [.. "第一行\n"u8, 0xB5, 0xDA, 0xB6, 0xFE, (byte)'\n']); // 第二 in GBK
        var error = Assert.Throws<TianGongException>(() => new TextCorpus(gbk).ToList());
        Assert.Contains("is not UTF-8 text", error.Message);
        Assert.Contains("line 2", error.Message);
    }

    [Fact]
    public void ACorpusOfBlankLinesIsRefusedInsteadOfGivingZeroTokens()
    {
        var blank = temp.Combine("blank.txt");
        File.WriteAllText(blank, "\n   \n\n");
        var writer = new TokenShardWriter(new TokenShardWriterOptions(VocabSize: 16, EosId: 0, ValFraction: 0.1));
        var error = Assert.Throws<TianGongException>(() => writer.Write(new TextCorpus(blank), text => [1, 2], temp.Combine("out"), blank));
        Assert.Contains("no documents to tokenize", error.Message);
    }
}
