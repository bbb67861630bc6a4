using System.Text;

namespace TianGong.Tokenizers;

/// <summary>
/// NFC/NFD for tokenizer normalizers. TianGong builds with InvariantGlobalization, where .NET has no Unicode
/// normalization data and <see cref="string.Normalize(NormalizationForm)"/> returns text unchanged. Then we
/// normalize only text the form provably leaves alone (ranges without canonical decompositions or combining
/// marks) and refuse the rest, rather than encode it differently from Hugging Face.
/// </summary>
internal static class UnicodeNormalization
{
    /// <summary>Whether this process can normalize (ICU loaded); probed once, never changes.</summary>
    public static readonly bool Available = "e\u0301".Normalize(NormalizationForm.FormC) == "\u00e9";

    public static string Normalize(string text, NormalizationForm form, string source)
    {
        if (Available) return text.Normalize(form);
        foreach (var rune in text.EnumerateRunes())
        {
            if (!IsStable(rune.Value, form))
                throw new TianGongException($"{source}: the normalizer is {form} and the text holds U+{rune.Value:X4}, which it may change, "
                    + "but this build has no Unicode normalization data (InvariantGlobalization), so the ids would differ from Hugging Face's");
        }
        return text;
    }

    // Code points with no canonical decomposition, combining class 0 and no composition with what precedes them.
    private static bool IsStable(int c, NormalizationForm form) =>
        c < (form == NormalizationForm.FormC ? 0x300 : 0xC0)     // NFD splits À..ÿ; NFC keeps them
        || c is >= 0x3000 and <= 0x3029 or >= 0x3030 and <= 0x303F // CJK punctuation (U+302A..302F are combining)
        || (form == NormalizationForm.FormC && c is >= 0x3041 and <= 0x3096 or >= 0x30A1 and <= 0x30FA or >= 0xAC00 and <= 0xD7A3)
        || c is >= 0x3400 and <= 0x4DBF or >= 0x4E00 and <= 0x9FFF  // CJK unified ideographs (not the F900 compatibility block)
        || c is >= 0xFF01 and <= 0xFF5E                               // fullwidth ASCII: compatibility mappings only
        || c is >= 0x1F300 and <= 0x1FAFF;                             // emoji
}
