using System.Text.Json;

namespace TianGong.Tests.Data;

/// <summary>
/// A miniature chinese-poetry package in the real layout: numbered files whose numeric and ordinal orders differ,
/// plus files the reader must ignore (author lists, a curated selection that repeats poems).
/// </summary>
internal static class PoetryFixture
{
    public const string JuejuFive = "靜夜思";
    public const string LushiFive = "帝京篇";
    public const string JuejuSeven = "山池";

    public static void Write(string root)
    {
        var shi = Path.Combine(root, "dist", "quantangshi");
        var ci = Path.Combine(root, "dist", "songci");
        Directory.CreateDirectory(shi);
        Directory.CreateDirectory(ci);

        // "10000" sorts before "2000" as text: the reader must order by number.
        WriteJson(Path.Combine(shi, "poet.tang.10000.json"), [
            Poem(LushiFive, "秦川雄帝宅，函谷壯皇居。", "綺殿千尋起，離宮百雉餘。", "連甍遙接漢，飛觀迥凌虛。", "雲日隱層闕，風煙出綺疎。"),
            Poem("缺字", "今宵冬律盡，來朝麗景新。", "綬吐芽猶嫩，冰□已鏤津。"),
            Poem("", "長聞鄉人語，此家勝良賈。", "骨肉化飢魂，倉中有飽鼠。"),
        ]);
        WriteJson(Path.Combine(shi, "poet.tang.2000.json"), [
            Poem(JuejuFive, "床前明月光，疑是地上霜。", "舉頭望明月，低頭思故鄉。"),
            Poem(JuejuSeven, "澄潭皎鏡石崔巍，萬壑千巖暗綠苔。", "林亭自有幽貞趣，況復秋深爽氣來。"),
            Poem("補字", "[爽]節在重九，物華新雨餘。", "清秋黃葉下，菊散金潭初。"),
            Poem("空段", "四時運灰琯，一夕變冬春。", ""),
            Poem("無詩"),
            Poem("四言", "元氣產芝，明神合德。", "紫微間采，白蕣呈色。"),
        ]);
        WriteJson(Path.Combine(shi, "poet.song.0.json"), [
            Poem("宋詩", "春眠不覺曉，處處聞啼鳥。", "夜來風雨聲，花落知多少。"),
        ]);
        WriteJson(Path.Combine(shi, "authors.tang.json"), [new Dictionary<string, object> { ["name"] = "李白", ["desc"] = "詩人" }]);
        WriteJson(Path.Combine(ci, "ci.song.0.json"), [
            new Dictionary<string, object> { ["author"] = "和岘", ["rhythmic"] = "导引", ["paragraphs"] = new[] { "气和玉烛，睿化著鸿明。", "缇管一阳生。" } },
        ]);
        WriteJson(Path.Combine(ci, "宋词三百首.json"), [
            new Dictionary<string, object> { ["rhythmic"] = "重复", ["paragraphs"] = new[] { "不该读到。" } },
        ]);
    }

    private static Dictionary<string, object> Poem(string title, params string[] paragraphs) =>
        new() { ["author"] = "某", ["title"] = title, ["paragraphs"] = paragraphs };

    private static void WriteJson(string path, Dictionary<string, object>[] value) => File.WriteAllText(path, JsonSerializer.Serialize(value));
}
