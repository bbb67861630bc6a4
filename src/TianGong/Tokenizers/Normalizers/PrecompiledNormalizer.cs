using System.Buffers.Binary;
using System.Globalization;
using System.Text;

namespace TianGong.Tokenizers;

/// <summary>
/// <c>Precompiled</c>: SentencePiece's compiled normalization rules (<c>precompiled_charsmap</c>: a darts-clone double
/// array trie of UTF-8 keys, then the NUL-terminated replacement strings). As HF's <c>spm_precompiled</c>: each grapheme
/// shorter than 6 UTF-8 bytes is looked up whole, else each of its code points; a hit is replaced by the replacement
/// of the first (shortest) key that prefixes it. No .NET library reads this format; it is a few dozen lines.
/// </summary>
internal sealed class PrecompiledNormalizer : INormalizer
{
    private readonly uint[] trie;
    private readonly byte[] replacements;

    private PrecompiledNormalizer(uint[] trie, byte[] replacements) => (this.trie, this.replacements) = (trie, replacements);

    public static PrecompiledNormalizer FromBase64(string? base64, string where)
    {
        byte[] blob;
        try
        {
            blob = Convert.FromBase64String(base64 ?? throw new TianGongException($"{where} is missing"));
        }
        catch (FormatException e)
        {
            throw new TianGongException($"{where} is not base64 ({e.Message})", e);
        }
        return FromBytes(blob, where);
    }

    public static PrecompiledNormalizer FromBytes(byte[] blob, string where)
    {
        if (blob.Length < 4) throw new TianGongException($"{where}: the charsmap is {blob.Length} bytes; too short for its trie size");
        uint trieBytes = BinaryPrimitives.ReadUInt32LittleEndian(blob);
        if (trieBytes % 4 != 0 || trieBytes > blob.Length - 4 || trieBytes == 0)
            throw new TianGongException($"{where}: the charsmap says its trie is {trieBytes} bytes, which does not fit its {blob.Length} bytes");
        var trie = new uint[trieBytes / 4];
        for (int i = 0; i < trie.Length; i++) trie[i] = BinaryPrimitives.ReadUInt32LittleEndian(blob.AsSpan(4 + 4 * i));
        return new PrecompiledNormalizer(trie, blob[(4 + (int)trieBytes)..]);
    }

    public NormalizedString Normalize(NormalizedString text)
    {
        var builder = text.Rewrite();
        bool modified = false;
        string s = text.Text;
        for (int start = 0; start < s.Length;)
        {
            int length = StringInfo.GetNextTextElementLength(s, start);
            if (length == 0) length = 1;
            if (Encoding.UTF8.GetByteCount(s.AsSpan(start, length)) < 6 && Transform(s.AsSpan(start, length)) is { } whole)
            {
                builder.Append(whole, start, start + length);
                modified = true;
            }
            else
            {
                for (int i = start; i < start + length;)
                {
                    int n = char.IsHighSurrogate(s[i]) && i + 1 < start + length ? 2 : 1;
                    if (Transform(s.AsSpan(i, n)) is { } part) { builder.Append(part, i, i + n); modified = true; }
                    else builder.Append(s.AsSpan(i, n), i, i + n);
                    i += n;
                }
            }
            start += length;
        }
        return modified ? builder.Build() : text;
    }

    /// <summary>The replacement of the shortest key prefixing <paramref name="chunk"/>, or null.</summary>
    private string? Transform(ReadOnlySpan<char> chunk)
    {
        Span<byte> key = stackalloc byte[Encoding.UTF8.GetMaxByteCount(chunk.Length)];
        key = key[..Encoding.UTF8.GetBytes(chunk, key)];
        uint node = 0;
        uint unit = trie[0];
        node ^= Offset(unit);
        foreach (byte c in key)
        {
            if (c == 0) break;
            node ^= c;
            if (node >= trie.Length) return null;
            unit = trie[node];
            if (Label(unit) != c) return null;
            node ^= Offset(unit);
            if (node >= trie.Length) return null;
            if (HasLeaf(unit)) return Replacement((int)Value(trie[node]));
        }
        return null;
    }

    private string Replacement(int index)
    {
        if ((uint)index >= (uint)replacements.Length) return "";
        int end = System.Array.IndexOf(replacements, (byte)0, index);
        return Encoding.UTF8.GetString(replacements, index, (end < 0 ? replacements.Length : end) - index);
    }

    // darts-clone's unit layout.
    private static bool HasLeaf(uint unit) => ((unit >> 8) & 1) == 1;
    private static uint Value(uint unit) => unit & ((1u << 31) - 1);
    private static uint Label(uint unit) => unit & ((1u << 31) | 0xFF);
    private static uint Offset(uint unit) => (unit >> 10) << (int)((unit & (1u << 9)) >> 6);
}
