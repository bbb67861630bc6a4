using System.Text;
using TianGong.Tokenizers;

namespace TianGong.Tests.Poetry;

/// <summary>
/// A tokenizer with a hand-picked vocabulary of byte strings (id = position; the last id is end-of-text), so a test
/// decides exactly which tokens exist, including ones that hold part of a character.
/// </summary>
internal sealed class ListTokenizer(params byte[][] tokens) : ITextTokenizer
{
    public const string Eos = "<|endoftext|>";

    public static ListTokenizer Of(params string[] tokens) => new([.. tokens.Select(Encoding.UTF8.GetBytes)]);

    public int VocabSize => tokens.Length + 1;
    public int BosId => -1;
    public int EosId => tokens.Length;
    public int PadId => -1;
    public IReadOnlyList<string> SpecialTokens => [Eos];
    public ChatTemplate? ChatTemplate => null;

    public int? TokenToId(string token) => token == Eos ? EosId
        : Array.FindIndex(tokens, t => t.AsSpan().SequenceEqual(Encoding.UTF8.GetBytes(token))) is var i and >= 0 ? i : null;

    public byte[] TokenBytes(int id) => id == EosId ? Encoding.UTF8.GetBytes(Eos) : tokens[id];

    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false)
    {
        var bytes = new List<byte>();
        foreach (var id in ids)
            if (!(skipSpecialTokens && id == EosId)) bytes.AddRange(TokenBytes(id));
        return Encoding.UTF8.GetString([.. bytes]);
    }

    /// <summary>No post-processor: special tokens are never added.</summary>
    public int[] Encode(string text, bool addSpecialTokens) => Encode(text);

    /// <summary>Longest match first, byte by byte.</summary>
    public int[] Encode(string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        var ids = new List<int>();
        for (int at = 0; at < bytes.Length;)
        {
            int best = -1;
            for (int id = 0; id < tokens.Length; id++)
                if (bytes.AsSpan(at).StartsWith(tokens[id]) && (best < 0 || tokens[id].Length > tokens[best].Length)) best = id;
            if (best < 0) throw new ArgumentException($"no token for byte {bytes[at]:x2}");
            ids.Add(best);
            at += tokens[best].Length;
        }
        return [.. ids];
    }
}
