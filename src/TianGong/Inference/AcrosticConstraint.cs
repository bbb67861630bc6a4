using System.Text;
using TianGong.Tokenizers;

namespace TianGong.Inference;

/// <summary>
/// 藏头诗: line i of the generated poem must begin with the i-th given character. At the start of each line
/// only tokens whose bytes begin with that character are allowed; end-of-text is forbidden until every line
/// is written, and generation ends when the last line's newline is produced.
/// </summary>
public sealed class AcrosticConstraint : ITokenConstraint
{
    private readonly ITextTokenizer tokenizer;
    private readonly Tensor[] lineStartMasks; // per line (V) bool
    private readonly Tensor midLine;          // (V) bool: no end-of-text, at most one newline and only at the end

    public AcrosticConstraint(ITextTokenizer tokenizer, string heads)
    {
        this.tokenizer = tokenizer;
        var chars = heads.EnumerateRunes().Select(r => r.ToString()).ToArray();
        if (chars.Length == 0) throw new TianGongException("acrostic: give at least one character");
        Lines = chars;
        int vocab = tokenizer.VocabSize;
        var tokenBytes = Enumerable.Range(0, vocab).Select(tokenizer.TokenBytes).ToArray();
        var specials = tokenizer.SpecialTokens.Select(t => tokenizer.TokenToId(t)).OfType<int>().ToHashSet();
        lineStartMasks = chars.Select(c =>
        {
            var prefix = Encoding.UTF8.GetBytes(c);
            var allowed = new bool[vocab];
            for (int id = 0; id < vocab; id++)
                allowed[id] = !specials.Contains(id) && tokenBytes[id].AsSpan().StartsWith(prefix);
            if (!allowed.Any(a => a))
                throw new TianGongException($"acrostic: no token of the vocabulary starts with '{c}'");
            return tensor(allowed);
        }).ToArray();
        // A token like "\n\n" would skip a line's head character, so mid-line a newline may only end a token.
        var midLineAllowed = tokenBytes.Select(b => b.AsSpan().IndexOf((byte)'\n') is var at && (at < 0 || at == b.Length - 1)).ToArray();
        midLineAllowed[tokenizer.EosId] = false;
        midLine = tensor(midLineAllowed);
    }

    public IReadOnlyList<string> Lines { get; }

    public Tensor? AllowedTokens(IReadOnlyList<int> generated)
    {
        var text = GeneratedBytes(generated);
        int newlines = text.Count(b => b == (byte)'\n');
        bool atLineStart = text.Length == 0 || text[^1] == (byte)'\n';
        if (newlines >= Lines.Count) return null;
        return atLineStart ? lineStartMasks[newlines] : midLine;
    }

    public bool IsComplete(IReadOnlyList<int> generated) =>
        GeneratedBytes(generated).Count(b => b == (byte)'\n') >= Lines.Count;

    // Token bytes, not decoded text: a token may hold half of a character, and lines are counted in bytes.
    private byte[] GeneratedBytes(IReadOnlyList<int> generated) => [.. generated.SelectMany(tokenizer.TokenBytes)];
}
