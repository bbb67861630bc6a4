namespace TianGong.Tokenizers;

/// <summary>Turns one pre-tokenized piece into tokens (HF <c>models</c>): BPE, WordPiece, WordLevel, Unigram.</summary>
internal interface ITokenizerModel
{
    /// <summary>The tokens of <paramref name="piece"/>; offsets are UTF-16 indices into it.</summary>
    IReadOnlyList<Token> Tokenize(string piece);

    int? TokenToId(string token);

    string? IdToToken(int id);

    /// <summary>Highest id + 1.</summary>
    int VocabSize { get; }
}

/// <summary>A bounded word → tokens cache, as HF's BPE and Unigram keep (text repeats its words).</summary>
internal sealed class TokenCache(int capacity = 100_000)
{
    private readonly Dictionary<string, Token[]> entries = new(StringComparer.Ordinal);
    private readonly Lock gate = new();

    public bool TryGet(string word, out Token[] tokens)
    {
        lock (gate) return entries.TryGetValue(word, out tokens!);
    }

    public void Add(string word, Token[] tokens)
    {
        if (word.Length > 256) return;
        lock (gate)
        {
            // As HF's cache: when full, new words are simply not remembered.
            if (entries.Count < capacity) entries.TryAdd(word, tokens);
        }
    }
}
