using System.Text;
using TianGong.Inference;
using TianGong.Tokenizers;

namespace TianGong.Poetry;

/// <summary>What `generate --form/--acrostic`, the demo and /v1/poems ask of a poem, as one constraint for the decoding core.</summary>
public static class PoemConstraint
{
    /// <summary>
    /// The verse form, the acrostic, both (a token must satisfy each; character i begins line i) or neither (null).
    /// An acrostic longer than the form, or with a character no line of verse can begin with, is an error.
    /// </summary>
    public static ITokenConstraint? Create(ITextTokenizer tokenizer, VerseForm? form, string? acrostic)
    {
        if (form is null && string.IsNullOrEmpty(acrostic)) return null;
        var tokens = new TokenByteTable(tokenizer);
        if (form is null) return new AcrosticConstraint(tokens, acrostic!);
        if (string.IsNullOrEmpty(acrostic)) return new VerseFormConstraint(tokens, form);
        var heads = acrostic.EnumerateRunes().ToList();
        if (heads.Count > form.Lines)
            throw new TianGongException($"acrostic: {heads.Count} characters, but a {form.Name} poem has {form.Lines} lines");
        if (heads.FirstOrDefault(h => !VerseForm.IsVerseCharacter(h)) is { Value: not 0 } bad)
            throw new TianGongException($"acrostic: '{bad}' is not a Han character, so no line of a {form.Name} poem can begin with it");
        return new AllOfConstraint([new VerseFormConstraint(tokens, form), new AcrosticConstraint(tokens, acrostic)]);
    }

    /// <summary>Enough new tokens for the form even if every character is written byte by byte (up to 4 UTF-8 bytes each).</summary>
    public static int TokenBudget(VerseForm form) => form.Lines * (4 * form.Characters + 4);
}
