using System.Text;

namespace TianGong.Poetry;

/// <summary>
/// A regulated-verse shape as generation writes it: <see cref="Lines"/> lines (句) of exactly <see cref="Characters"/>
/// Han characters, "，" after the odd lines and "。" after the even ones (counting from 1), one line per printed line.
/// 絕句 has 4 lines and 律詩 8, of 5 or 7 characters: the shapes <see cref="RegulatedVerse"/> recognises in the corpus.
/// </summary>
public sealed record VerseForm(string Name, int Lines, int Characters)
{
    public static readonly VerseForm Jueju5 = new("jueju5", 4, 5);
    public static readonly VerseForm Jueju7 = new("jueju7", 4, 7);
    public static readonly VerseForm Lushi5 = new("lushi5", 8, 5);
    public static readonly VerseForm Lushi7 = new("lushi7", 8, 7);

    public static IReadOnlyList<VerseForm> All { get; } = [Jueju5, Jueju7, Lushi5, Lushi7];

    public static VerseForm Parse(string name) =>
        All.FirstOrDefault(f => string.Equals(f.Name, name.Trim(), StringComparison.OrdinalIgnoreCase))
        ?? throw new TianGongException($"form: unknown verse form '{name}' (known forms: {string.Join(", ", All.Select(f => f.Name))})");

    /// <summary>The corpus filter (data.form) that keeps poems of this many lines.</summary>
    public PoetryForm CorpusForm => Lines == 4 ? PoetryForm.Jueju : PoetryForm.Lushi;

    /// <summary>The mark that ends line <paramref name="line"/> (from 0): "，" for the first of a couplet, "。" for the second.</summary>
    public static Rune Punctuation(int line) => new(line % 2 == 0 ? '，' : '。');

    /// <summary>True for a Han character (CJK unified and compatibility ideographs, all extensions): what a line of verse is made of.</summary>
    public static bool IsVerseCharacter(Rune r) => r.Value is >= 0x3400 and <= 0x4DBF or >= 0x4E00 and <= 0x9FFF
        or >= 0xF900 and <= 0xFAFF or >= 0x20000 and <= 0x2EBEF or >= 0x30000 and <= 0x3134F;

    /// <summary>Whether <paramref name="text"/> is a poem of exactly this shape (a trailing newline after the last line allowed).</summary>
    public bool Matches(string text)
    {
        var lines = text.TrimEnd('\n').Split('\n');
        if (lines.Length != Lines) return false;
        for (int i = 0; i < Lines; i++)
        {
            var runes = lines[i].EnumerateRunes().ToList();
            if (runes.Count != Characters + 1 || runes[^1] != Punctuation(i) || !runes.Take(Characters).All(IsVerseCharacter)) return false;
        }
        return true;
    }
}
