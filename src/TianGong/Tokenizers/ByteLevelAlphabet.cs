namespace TianGong.Tokenizers;

/// <summary>
/// GPT-2's reversible byte ↔ printable-char map: printable Latin-1 bytes map to themselves, the other
/// 68 bytes to U+0100.. in byte order. Vocabulary strings in tokenizer.json are spelled in these chars.
/// </summary>
internal static class ByteLevelAlphabet
{
    // Highest char the map produces is U+0143 ('Ń'); CharToByte is indexed up to it.
    private const int MaxChar = 0x143;

    private static readonly char[] byteToChar = BuildByteToChar();
    private static readonly short[] charToByte = BuildCharToByte(byteToChar);

    public static char ToChar(byte b) => byteToChar[b];

    /// <summary>The byte a vocabulary char stands for, or -1 when the char is outside the alphabet.</summary>
    public static int ToByte(char c) => c <= MaxChar ? charToByte[c] : -1;

    /// <summary>Spells bytes as a vocabulary string.</summary>
    public static string Spell(ReadOnlySpan<byte> bytes)
    {
        return string.Create(bytes.Length, bytes.ToArray(), static (chars, raw) =>
        {
            for (int i = 0; i < raw.Length; i++) chars[i] = byteToChar[raw[i]];
        });
    }

    /// <summary>The bytes a vocabulary string stands for, or null when it has a char outside the alphabet.</summary>
    public static byte[]? Unspell(string token)
    {
        var bytes = new byte[token.Length];
        for (int i = 0; i < token.Length; i++)
        {
            int b = ToByte(token[i]);
            if (b < 0) return null;
            bytes[i] = (byte)b;
        }
        return bytes;
    }

    private static char[] BuildByteToChar()
    {
        var map = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            map[b] = printable ? (char)b : (char)next++;
        }
        return map;
    }

    private static short[] BuildCharToByte(char[] map)
    {
        var inverse = new short[MaxChar + 1];
        Array.Fill(inverse, (short)-1);
        for (int b = 0; b < 256; b++) inverse[map[b]] = (short)b;
        return inverse;
    }
}
