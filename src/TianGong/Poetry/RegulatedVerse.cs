namespace TianGong.Poetry;

/// <summary>
/// Recognises 绝句 and 律诗 from their paragraphs. In <c>chinese-poetry</c> a paragraph is normally one couplet,
/// "秦川雄帝宅，函谷壯皇居。", i.e. two half-lines; counting half-lines instead of paragraphs also accepts
/// poems whose couplets were merged into one paragraph.
/// </summary>
public static class RegulatedVerse
{
    private const string Punctuation = "，。？！；：、,.?!;:";

    public static bool Matches(IReadOnlyList<string> paragraphs, PoetryForm form) => form switch
    {
        PoetryForm.Any => true,
        PoetryForm.Jueju => HasShape(paragraphs, halfLines: 4),
        PoetryForm.Lushi => HasShape(paragraphs, halfLines: 8),
        _ => throw new ArgumentOutOfRangeException(nameof(form), form, null),
    };

    private static bool HasShape(IReadOnlyList<string> paragraphs, int halfLines)
    {
        int count = 0, length = 0;
        foreach (var paragraph in paragraphs)
        {
            var inParagraph = 0;
            foreach (var clause in paragraph.AsSpan().SplitAny(Punctuation))
            {
                var text = paragraph.AsSpan()[clause].Trim();
                if (text.IsEmpty) continue;
                // Runes, not chars: rare characters outside the BMP are one character of verse.
                var runes = CountRunes(text);
                if (runes != 5 && runes != 7) return false;
                if (length == 0) length = runes;
                else if (runes != length) return false;
                inParagraph++;
            }
            // A paragraph that ends mid-couplet is not a regulated layout.
            if (inParagraph % 2 != 0) return false;
            count += inParagraph;
        }
        return count == halfLines;
    }

    private static int CountRunes(ReadOnlySpan<char> text)
    {
        var n = 0;
        foreach (var _ in text.EnumerateRunes()) n++;
        return n;
    }
}
