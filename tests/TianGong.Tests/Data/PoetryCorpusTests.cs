using Xunit;
using TianGong.Data;
using TianGong.Poetry;

namespace TianGong.Tests.Data;

public sealed class PoetryCorpusTests : IDisposable
{
    private readonly TempDirectory temp = new();
    private readonly string root;

    public PoetryCorpusTests()
    {
        root = temp.Combine("chinese-poetry");
        PoetryFixture.Write(root);
    }

    public void Dispose() => temp.Dispose();

    [Fact]
    public void TangPoemsComeAsTitleThenOneParagraphPerLineInNumericFileOrder()
    {
        var documents = new PoetryCorpus(root, new PoetryCorpusOptions(PoetryCollections.Tang)).ToList();

        Assert.Equal(
        [
            "靜夜思\n床前明月光，疑是地上霜。\n舉頭望明月，低頭思故鄉。",
            "山池\n澄潭皎鏡石崔巍，萬壑千巖暗綠苔。\n林亭自有幽貞趣，況復秋深爽氣來。",
            "四言\n元氣產芝，明神合德。\n紫微間采，白蕣呈色。",
            "帝京篇\n秦川雄帝宅，函谷壯皇居。\n綺殿千尋起，離宮百雉餘。\n連甍遙接漢，飛觀迥凌虛。\n雲日隱層闕，風煙出綺疎。",
        ], documents);
    }

    [Fact]
    public void CiUseTheTuneNameAsTitleAndCuratedSelectionsAreIgnored()
    {
        var documents = new PoetryCorpus(root, new PoetryCorpusOptions(PoetryCollections.Ci)).ToList();

        Assert.Equal(["导引\n气和玉烛，睿化著鸿明。\n缇管一阳生。"], documents);
    }

    [Fact]
    public void CollectionsCombineInTangSongCiOrder()
    {
        var corpus = new PoetryCorpus(root);

        var titles = corpus.Select(d => d.Split('\n')[0]).ToList();

        Assert.Equal(["靜夜思", "山池", "四言", "帝京篇", "宋詩", "导引"], titles);
        Assert.Equal("chinese-poetry:tang+song+ci;form=any", corpus.Source);
    }

    [Theory]
    [InlineData(PoetryForm.Jueju, new[] { "靜夜思", "山池", "宋詩" })]
    [InlineData(PoetryForm.Lushi, new[] { "帝京篇" })]
    public void FormFilterKeepsOnlyRegulatedVerseOfThatLength(PoetryForm form, string[] expected)
    {
        var titles = new PoetryCorpus(root, new PoetryCorpusOptions(PoetryCollections.All, form))
            .Select(d => d.Split('\n')[0]).ToList();

        Assert.Equal(expected, titles);
    }

    [Fact]
    public void RegulatedVerseRejectsMixedLengthsAndOddHalfLines()
    {
        Assert.True(RegulatedVerse.Matches(["床前明月光，疑是地上霜。", "舉頭望明月，低頭思故鄉。"], PoetryForm.Jueju));
        Assert.True(RegulatedVerse.Matches(["床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。"], PoetryForm.Jueju));
        Assert.False(RegulatedVerse.Matches(["床前明月光，疑是地上霜。", "舉頭望明月，低頭思故鄉鄉。"], PoetryForm.Jueju));
        Assert.False(RegulatedVerse.Matches(["床前明月光，疑是地上霜，舉頭望明月。", "低頭思故鄉。"], PoetryForm.Jueju));
        Assert.False(RegulatedVerse.Matches(["床前明月光，疑是地上霜。", "舉頭望明月，低頭思故鄉。"], PoetryForm.Lushi));
    }

    [Fact]
    public void AnIncompleteDatasetFolderIsNamedInTheError()
    {
        var missing = temp.Combine("nowhere", "chinese-poetry");

        var error = Assert.Throws<TianGongException>(() => new PoetryCorpus(missing));

        Assert.Contains("fetched again", error.Message);
        Assert.Contains(missing, error.Message);
    }

    [Fact]
    public void FactoryFindsPoetryUnderTheHomeAndOtherwiseReadsAPath()
    {
        var home = temp.Combine("home");
        PoetryFixture.Write(Path.Combine(home, "datasets", "chinese-poetry"));
        var text = temp.Combine("one.txt");
        File.WriteAllText(text, "甲\n\n乙");

        var poetry = Corpus.Open("chinese-poetry", new CorpusOptions(new PoetryCorpusOptions(PoetryCollections.Song), Home: home));
        var plain = Corpus.Open(text);

        Assert.IsType<PoetryCorpus>(poetry);
        Assert.Equal(["宋詩\n春眠不覺曉，處處聞啼鳥。\n夜來風雨聲，花落知多少。"], poetry.ToList());
        Assert.Equal("chinese-poetry:song;form=any", poetry.Source);
        Assert.Equal(["甲", "乙"], plain.ToList());
        // A folder that exists is never fetched over, even when it is not a complete dataset.
        Directory.CreateDirectory(temp.Combine("empty", "datasets", "chinese-poetry"));
        Assert.Throws<TianGongException>(() => Corpus.Open("chinese-poetry", new CorpusOptions(Home: temp.Combine("empty"))));
    }
}
