using System.Text;
using TianGong.Inference;
using TianGong.Tokenizers;

namespace TianGong.Poetry;

/// <summary>
/// Holds generation to a <see cref="VerseForm"/>: each line exactly N Han characters, then its "，" or "。", then a
/// newline; generation ends with the last line's newline. Works on token bytes, as <see cref="AcrosticConstraint"/>
/// does: a token is allowed when its bytes, appended to what was generated, still spell a prefix of such a poem,
/// so a token may end in the middle of a character (byte-level BPE) as long as some character can complete it.
/// </summary>
public sealed class VerseFormConstraint : ITokenConstraint
{
    private readonly TokenByteTable tokens;
    private readonly Dictionary<Position, bool[]> masks = [];  // the allowed tokens depend on the position only

    public VerseFormConstraint(ITextTokenizer tokenizer, VerseForm form) : this(new TokenByteTable(tokenizer), form) { }

    public VerseFormConstraint(TokenByteTable tokens, VerseForm form)
    {
        this.tokens = tokens;
        Form = form;
        // Every line needs a Han character, its mark and a newline from some token: fail now rather than mid-poem.
        var start = AllowedAt(new Position(0, 0, false, []));
        if (Array.IndexOf(start, true) < 0)
            throw new TianGongException($"form {form.Name}: no token of the vocabulary begins with a Han character");
    }

    public VerseForm Form { get; }

    public string Description => $"form {Form.Name}";

    public bool[]? AllowedTokens(IReadOnlyList<int> generated)
    {
        var position = Walk(new Position(0, 0, false, []), tokens.Concat(generated))
            ?? throw new TianGongException($"form {Form.Name}: the text generated so far is not the start of a {Form.Name} poem");
        if (IsDone(position)) return null;
        if (!masks.TryGetValue(position, out var mask)) masks[position] = mask = AllowedAt(position);
        return mask;
    }

    public bool IsComplete(IReadOnlyList<int> generated) =>
        Walk(new Position(0, 0, false, []), tokens.Concat(generated)) is { } p && IsDone(p);

    private bool IsDone(Position p) => p.Line == Form.Lines;

    private bool[] AllowedAt(Position position)
    {
        var allowed = new bool[tokens.VocabSize];
        for (int id = 0; id < allowed.Length; id++)
            allowed[id] = !tokens.IsSpecial[id] && tokens.Bytes[id].Length > 0 && Walk(position, tokens.Bytes[id]) is not null;
        return allowed;
    }

    /// <summary>Where the poem stands after <paramref name="bytes"/>, or null when they leave the form.</summary>
    private Position? Walk(Position from, ReadOnlySpan<byte> bytes)
    {
        var p = from;
        var pending = new List<byte>(p.Pending);
        foreach (var b in bytes)
        {
            if (IsDone(p)) return null;                                   // nothing may follow the last newline
            pending.Add(b);
            var status = Rune.DecodeFromUtf8([.. pending], out var rune, out int consumed);
            if (status == System.Buffers.OperationStatus.NeedMoreData)
            {
                if (!CanComplete(p, [.. pending])) return null;
                continue;
            }
            if (status != System.Buffers.OperationStatus.Done || consumed != pending.Count) return null;
            pending.Clear();
            if (Next(p, rune) is not { } next) return null;
            p = next;
        }
        return p with { Pending = [.. pending] };
    }

    /// <summary>The position after one more character, or null when the form does not allow it there.</summary>
    private Position? Next(Position p, Rune r)
    {
        if (p.AfterMark) return r.Value == '\n' ? new Position(p.Line + 1, 0, false, []) : null;
        if (p.Characters < Form.Characters) return VerseForm.IsVerseCharacter(r) ? p with { Characters = p.Characters + 1 } : null;
        return r == VerseForm.Punctuation(p.Line) ? p with { AfterMark = true } : null;
    }

    /// <summary>Whether the partial UTF-8 sequence <paramref name="prefix"/> can still become a character the form allows here.</summary>
    private bool CanComplete(Position p, byte[] prefix)
    {
        int length = prefix[0] switch { >= 0xF0 and <= 0xF4 => 4, >= 0xE0 => 3, >= 0xC2 and <= 0xDF => 2, _ => 0 };
        if (length <= prefix.Length) return false;
        // The completions of a prefix are one range of code points: the prefix's bits, then all zeros or all ones.
        int lead = prefix[0] & (0xFF >> (length + 1)), low = lead, high = lead;
        for (int i = 1; i < length; i++)
        {
            int bits = i < prefix.Length ? prefix[i] & 0x3F : -1;
            if (i < prefix.Length && (prefix[i] & 0xC0) != 0x80) return false;
            low = (low << 6) | (bits < 0 ? 0 : bits);
            high = (high << 6) | (bits < 0 ? 0x3F : bits);
        }
        low = Math.Max(low, length switch { 2 => 0x80, 3 => 0x800, _ => 0x10000 });  // shorter encodings of a code point are invalid
        if (p.AfterMark) return false;                                    // a newline is one byte
        if (p.Characters == Form.Characters) return VerseForm.Punctuation(p.Line).Value is var mark && mark >= low && mark <= high;
        return HanRanges.Any(r => r.Low <= high && low <= r.High);
    }

    private static readonly (int Low, int High)[] HanRanges =
        [(0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2EBEF), (0x30000, 0x3134F)];

    /// <param name="Line">Lines finished (from 0; the form's line count when the poem is done).</param>
    /// <param name="Characters">Han characters written on the current line.</param>
    /// <param name="AfterMark">The line's mark is written and its newline is due.</param>
    /// <param name="Pending">Bytes of a character a token left unfinished.</param>
    private sealed record Position(int Line, int Characters, bool AfterMark, byte[] Pending)
    {
        public bool Equals(Position? other) => other is not null && Line == other.Line && Characters == other.Characters
            && AfterMark == other.AfterMark && Pending.AsSpan().SequenceEqual(other.Pending);

        public override int GetHashCode() => HashCode.Combine(Line, Characters, AfterMark, Pending.Length, Pending.Length > 0 ? Pending[0] : 0);
    }
}
