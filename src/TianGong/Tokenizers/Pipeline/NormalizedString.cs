using System.Text;

namespace TianGong.Tokenizers;

/// <summary>
/// Text on its way through normalizers and pre-tokenizers, with the span of the original input each of its chars
/// came from, as HF tokenizers' <c>NormalizedString</c>: offsets of the final tokens point into the user's text.
/// Offsets are UTF-16 indices into the original string; the CLI converts them to code points for display.
/// </summary>
internal sealed class NormalizedString
{
    // Original span of char i; null while the text is an unchanged slice of the original starting at `shift`.
    private readonly int[]? starts, ends;
    private readonly int shift;

    /// <summary>Where this (possibly empty) text sits in the original: its first char's start, or the position it was cut at.</summary>
    public int OriginalStart { get; }

    public string Text { get; }

    public int Length => Text.Length;

    private NormalizedString(string text, int[]? starts, int[]? ends, int shift, int originalStart)
    {
        Text = text;
        (this.starts, this.ends, this.shift, OriginalStart) = (starts, ends, shift, originalStart);
    }

    public static NormalizedString FromOriginal(string text) => new(text, null, null, 0, 0);

    public int StartOf(int index) => starts is null ? shift + index : starts[index];

    public int EndOf(int index) => ends is null ? shift + index + 1 : ends[index];

    /// <summary>The original span of chars [from, to); an empty range maps to the position it is at.</summary>
    public (int Start, int End) OriginalSpan(int from, int to)
    {
        if (from >= to) return from < Length ? (StartOf(from), StartOf(from)) : Length == 0 ? (OriginalStart, OriginalStart) : (EndOf(Length - 1), EndOf(Length - 1));
        return (StartOf(from), EndOf(to - 1));
    }

    public NormalizedString Slice(int from, int to)
    {
        int origin = OriginalSpan(from, to).Start;
        if (starts is null) return new NormalizedString(Text[from..to], null, null, shift + from, origin);
        return new NormalizedString(Text[from..to], starts[from..to], ends![from..to], 0, origin);
    }

    /// <summary>Starts a rewrite of this text; every appended piece says which of our chars it came from.</summary>
    public Builder Rewrite() => new(this);

    /// <summary>
    /// <paramref name="prefix"/> in front of non-empty text, aligned as HF's <c>prepend</c>: with the first char's span.
    /// </summary>
    public NormalizedString Prepend(string prefix)
    {
        if (Length == 0) return this;
        int first = char.IsHighSurrogate(Text[0]) && Length > 1 ? 2 : 1;
        return Rewrite().Append(prefix, 0, first).Copy(0, Length).Build();
    }

    /// <summary>Applies a function to each code point (a string out per code point in), keeping alignments.</summary>
    public NormalizedString MapCodePoints(Func<Rune, string?> map)
    {
        var builder = Rewrite();
        for (int i = 0; i < Text.Length;)
        {
            var rune = Rune.GetRuneAt(Text, i);
            int n = rune.Utf16SequenceLength;
            builder.Append(map(rune) ?? "", i, i + n);
            i += n;
        }
        return builder.Build();
    }

    public override string ToString() => Text;

    internal sealed class Builder(NormalizedString source)
    {
        private readonly StringBuilder text = new(source.Length);
        private readonly List<int> starts = new(source.Length), ends = new(source.Length);

        /// <summary>Appends <paramref name="output"/>, every char of which comes from source chars [from, to) (an insertion when empty).</summary>
        public Builder Append(ReadOnlySpan<char> output, int from, int to)
        {
            var (start, end) = source.OriginalSpan(from, to);
            text.Append(output);
            for (int i = 0; i < output.Length; i++)
            {
                starts.Add(start);
                ends.Add(end);
            }
            return this;
        }

        /// <summary>Appends our chars [from, to) unchanged, each keeping its own span.</summary>
        public Builder Copy(int from, int to)
        {
            for (int i = from; i < to; i++)
            {
                text.Append(source.Text[i]);
                starts.Add(source.StartOf(i));
                ends.Add(source.EndOf(i));
            }
            return this;
        }

        public NormalizedString Build() =>
            new(text.ToString(), [.. starts], [.. ends], 0, starts.Count > 0 ? starts[0] : source.OriginalStart);
    }
}
