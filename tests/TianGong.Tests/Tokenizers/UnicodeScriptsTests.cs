using System.Text;
using System.Text.Json;
using TianGong.Tokenizers;

namespace TianGong.Tests.Tokenizers;

/// <summary>
/// The UnicodeScripts pre-tokenizer: the cases of tokenizers' own unit tests (pre_tokenizers/unicode_scripts), and the
/// pieces the Rust library cuts for 77 strings of all scripts (components/unicode-scripts-expected.json, recorded by
/// unicode-scripts.js through a WordLevel model that makes each piece one token).
/// </summary>
public sealed class UnicodeScriptsTests
{
    private static readonly string Folder = Path.Combine(AppContext.BaseDirectory, "Fixtures", "tokenizers", "components");

    private static string Script(char c) => UnicodeScriptTable.Names[UnicodeScriptsPreTokenizer.FixedScript(new Rune(c))];

    [Fact]
    public void Scripts_as_tokenizers_fixed_script_gives_them()
    {
        Assert.Equal(["Han", "Han", "Han", "Han", "Han"], new[] { '京', '太', 'い', 'グ', 'ー' }.Select(Script));
        Assert.Equal(["Latin", "Latin", "Common", "Common", "Common", "Common", "Any"], new[] { 'a', 'A', '0', '$', '@', '-', ' ' }.Select(Script));
        Assert.Equal(["Greek", "Cyrillic", "Hangul", "Arabic", "Thai", "Inherited"], new[] { 'α', 'Ж', '한', 'ب', 'ก', '\u0301' }.Select(Script));
        // Assigned after Unicode 9.0, so without a script in tokenizers' table: 🥰 (Unicode 11).
        Assert.Equal(0, UnicodeScriptsPreTokenizer.FixedScript(new Rune(0x1F970)));
        Assert.Equal("Common", UnicodeScriptTable.Names[UnicodeScriptsPreTokenizer.FixedScript(new Rune(0x1F600))]);
    }

    [Fact]
    public void Pieces_match_the_Rust_library()
    {
        var tokenizer = PipelineTokenizer.Load(Path.Combine(Folder, "unicode_scripts.json"));
        using var expected = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(Folder, "unicode-scripts-expected.json")));
        var strings = expected.RootElement.GetProperty("strings").EnumerateArray().Select(s => s.GetString()!).ToArray();
        var pieces = expected.RootElement.GetProperty("pieces").EnumerateArray().ToArray();
        Assert.True(strings.Length >= 70);
        var failures = new List<string>();
        for (int i = 0; i < strings.Length; i++)
        {
            var codePoint = new int[strings[i].Length + 1];
            for (int c = 0, cp = 0; c <= strings[i].Length; c++)
            {
                codePoint[c] = cp;
                if (c < strings[i].Length && !char.IsHighSurrogate(strings[i][c])) cp++;
            }
            string got = JsonSerializer.Serialize(tokenizer.EncodeToTokens(strings[i], addSpecialTokens: false).Select(t => new[] { codePoint[t.Start], codePoint[t.End] }));
            if (got != pieces[i].GetRawText()) failures.Add($"#{i} {JsonSerializer.Serialize(strings[i])}: want {pieces[i].GetRawText()}, got {got}");
        }
        Assert.True(failures.Count == 0, $"{failures.Count} differences:\n" + string.Join("\n", failures.Take(12)));
        // tokenizers' own cases: "どこで生れ。Yes" → どこで生れ | 。 | Yes; spaces stay with the piece before them.
        Assert.Equal(["どこで生れ", "。", "Yes"], Pieces(tokenizer, "どこで生れ。Yes"));
        Assert.Equal(["Apples are ", "りんご 林檎"], Pieces(tokenizer, "Apples are りんご 林檎"));
        Assert.Equal(["leading"], Pieces(tokenizer, "  leading"));
    }

    private static string[] Pieces(PipelineTokenizer tokenizer, string text) =>
        [.. tokenizer.EncodeToTokens(text, addSpecialTokens: false).Select(t => text[t.Start..t.End])];
}
