using System.Text;
using TianGong.Inference;
using TianGong.Tokenizers;

namespace TianGong.Poetry;

/// <summary>
/// 藏头诗: line i of the generated poem must begin with the i-th given character. At the start of each line only
/// tokens that spell that character's bytes, or their beginning (a token may hold part of a character), are allowed;
/// end-of-text is forbidden until every line is written, and generation ends when the last line's newline is produced.
/// </summary>
public sealed class AcrosticConstraint : ITokenConstraint
{
    private readonly TokenByteTable tokens;
    private readonly byte[][] heads;
    private readonly Dictionary<(int Line, int Written), bool[]> headMasks = [];
    private readonly bool[] midLine;          // no end-of-text, at most one newline and only at the end

    public AcrosticConstraint(ITextTokenizer tokenizer, string heads) : this(new TokenByteTable(tokenizer), heads) { }

    public AcrosticConstraint(TokenByteTable tokens, string heads)
    {
        this.tokens = tokens;
        Lines = [.. heads.EnumerateRunes().Select(r => r.ToString())];
        if (Lines.Count == 0) throw new TianGongException("acrostic: give at least one character");
        this.heads = [.. Lines.Select(Encoding.UTF8.GetBytes)];
        for (int line = 0; line < Lines.Count; line++)
            if (Array.IndexOf(HeadMask(line, 0), true) < 0)
                throw new TianGongException($"acrostic: no token of the vocabulary starts with '{Lines[line]}' or a part of it");
        // A token like "\n\n" would skip a line's head character, so mid-line a newline may only end a token.
        midLine = [.. tokens.Bytes.Select((b, id) => !tokens.IsSpecial[id] && b.AsSpan().IndexOf((byte)'\n') is var at && (at < 0 || at == b.Length - 1))];
    }

    public IReadOnlyList<string> Lines { get; }

    public string Description => $"acrostic {string.Concat(Lines)}";

    public bool[]? AllowedTokens(IReadOnlyList<int> generated)
    {
        // Token bytes, not decoded text: a token may hold half of a character, and lines are counted in bytes.
        var text = tokens.Concat(generated);
        int line = text.Count(b => b == (byte)'\n');
        if (line >= Lines.Count) return null;
        int written = text.Length - (Array.LastIndexOf(text, (byte)'\n') + 1);   // bytes of the current line so far
        return written < heads[line].Length ? HeadMask(line, written) : midLine;
    }

    public bool IsComplete(IReadOnlyList<int> generated) =>
        tokens.Concat(generated).Count(b => b == (byte)'\n') >= Lines.Count;

    /// <summary>
    /// Tokens that go on from the first <paramref name="written"/> bytes of line <paramref name="line"/>'s head: the
    /// rest of the head and maybe more (a newline only at the token's end), or a further part of the head.
    /// </summary>
    private bool[] HeadMask(int line, int written)
    {
        if (headMasks.TryGetValue((line, written), out var cached)) return cached;
        var rest = heads[line].AsSpan(written);
        var allowed = new bool[tokens.VocabSize];
        for (int id = 0; id < allowed.Length; id++)
        {
            var b = tokens.Bytes[id].AsSpan();
            if (tokens.IsSpecial[id] || b.IsEmpty) continue;
            allowed[id] = b.Length <= rest.Length
                ? rest.StartsWith(b)
                : b.StartsWith(rest) && b[rest.Length..].IndexOf((byte)'\n') is var at && (at < 0 || at == b.Length - rest.Length - 1);
        }
        return headMasks[(line, written)] = allowed;
    }
}
