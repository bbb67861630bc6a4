namespace TianGong.Tokenizers;

/// <summary>One token a model (or the added vocabulary) produced: offsets are chars of the piece it was cut from.</summary>
internal readonly record struct Token(int Id, string Value, int Start, int End);

/// <summary>A piece of the input: its text, and its tokens once an added token or the model has produced them.</summary>
internal sealed record Piece(NormalizedString Normalized, Token[]? Tokens = null);

/// <summary>The input cut into pieces, as HF's <c>PreTokenizedString</c>: pre-tokenizers refine the pieces still without tokens.</summary>
internal sealed class PreTokenizedString(NormalizedString whole)
{
    public List<Piece> Splits { get; private set; } = [new Piece(whole)];

    /// <summary>Replaces each piece without tokens by the pieces <paramref name="split"/> cuts it into; empty pieces are dropped.</summary>
    public void Split(Func<int, NormalizedString, IEnumerable<Piece>> split)
    {
        var result = new List<Piece>(Splits.Count);
        for (int i = 0; i < Splits.Count; i++)
        {
            var piece = Splits[i];
            if (piece.Tokens is not null) { result.Add(piece); continue; }
            foreach (var part in split(i, piece.Normalized))
                if (part.Normalized.Length > 0) result.Add(part);
        }
        Splits = result;
    }

    /// <summary>Rewrites the text of each piece without tokens.</summary>
    public void Normalize(Func<NormalizedString, NormalizedString> normalize)
    {
        for (int i = 0; i < Splits.Count; i++)
            if (Splits[i].Tokens is null) Splits[i] = new Piece(normalize(Splits[i].Normalized));
    }
}
