using System.Text;
using TianGong.Inference;
using TianGong.Tokenizers;

namespace TianGong.Poetry;

/// <summary>
/// 藏头诗: line i of the generated poem must begin with the i-th given character. At the start of each line
/// only tokens whose bytes begin with that character are allowed; end-of-text is forbidden until every line
/// is written, and generation ends when the last line's newline is produced.
/// </summary>
public sealed class AcrosticConstraint : ITokenConstraint
{
    private readonly TokenByteTable tokens;
    private readonly bool[][] lineStartMasks; // per line, by token id
    private readonly bool[] midLine;          // no end-of-text, at most one newline and only at the end

    public AcrosticConstraint(ITextTokenizer tokenizer, string heads) : this(new TokenByteTable(tokenizer), heads) { }

    public AcrosticConstraint(TokenByteTable tokens, string heads)
    {
        this.tokens = tokens;
        var chars = heads.EnumerateRunes().Select(r => r.ToString()).ToArray();
        if (chars.Length == 0) throw new TianGongException("acrostic: give at least one character");
        Lines = chars;
        int vocab = tokens.VocabSize;
        lineStartMasks = [.. chars.Select(c =>
        {
            var prefix = Encoding.UTF8.GetBytes(c);
            var allowed = new bool[vocab];
            for (int id = 0; id < vocab; id++)
                allowed[id] = !tokens.IsSpecial[id] && tokens.Bytes[id].AsSpan().StartsWith(prefix);
            if (!allowed.Any(a => a))
                throw new TianGongException($"acrostic: no token of the vocabulary starts with '{c}'");
            return allowed;
        })];
        // A token like "\n\n" would skip a line's head character, so mid-line a newline may only end a token.
        midLine = [.. tokens.Bytes.Select((b, id) => !tokens.IsSpecial[id] && b.AsSpan().IndexOf((byte)'\n') is var at && (at < 0 || at == b.Length - 1))];
    }

    public IReadOnlyList<string> Lines { get; }

    public string Description => $"acrostic {string.Concat(Lines)}";

    public bool[]? AllowedTokens(IReadOnlyList<int> generated)
    {
        // Token bytes, not decoded text: a token may hold half of a character, and lines are counted in bytes.
        var text = tokens.Concat(generated);
        int newlines = text.Count(b => b == (byte)'\n');
        bool atLineStart = text.Length == 0 || text[^1] == (byte)'\n';
        if (newlines >= Lines.Count) return null;
        return atLineStart ? lineStartMasks[newlines] : midLine;
    }

    public bool IsComplete(IReadOnlyList<int> generated) =>
        tokens.Concat(generated).Count(b => b == (byte)'\n') >= Lines.Count;
}
