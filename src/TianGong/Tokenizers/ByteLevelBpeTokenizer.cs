using System.Buffers;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace TianGong.Tokenizers;

/// <summary>
/// A GPT-2-style byte-level BPE tokenizer stored as Hugging Face tokenizer.json, as our trainer writes it: the one
/// the trainer and the data pipeline use (its byte API carries invalid UTF-8). Encoding goes through our merge table
/// (ids as HF's); Microsoft.ML.Tokenizers decodes. Model folders load through <see cref="PipelineTokenizer"/>,
/// which gives the same ids for these files.
/// </summary>
public sealed class ByteLevelBpeTokenizer : ITextTokenizer
{
    private readonly string?[] modelVocabById;          // model.vocab by id; null where only an added token has the id
    private readonly Dictionary<string, int> tokenToId; // model.vocab plus added tokens' content
    private readonly byte[]?[] bytesById;
    private readonly bool[] isSpecial;
    private readonly (string Left, string Right)[] mergeNames;
    private readonly AddedToken[] addedTokens;
    private readonly byte[][] addedTokenUtf8;
    private readonly int[] byteIds = new int[256];
    private readonly BpeMergeTable mergeTable;
    private readonly BpeTokenizer textTokenizer;
    private readonly CodePointRegex? splitPattern; // null: GPT-2's pattern
    private readonly bool nfc, ignoreMerges;
    private readonly string source;

    internal ByteLevelBpeTokenizer(TokenizerJsonData data, string source)
    {
        addedTokens = [.. data.AddedTokens.OrderBy(t => t.Id)];
        int size = Math.Max(data.Vocab.Count == 0 ? 0 : data.Vocab.Values.Max() + 1,
            addedTokens.Length == 0 ? 0 : addedTokens[^1].Id + 1);
        modelVocabById = new string?[size];
        bytesById = new byte[]?[size];
        isSpecial = new bool[size];
        tokenToId = new Dictionary<string, int>(data.Vocab.Count + addedTokens.Length, StringComparer.Ordinal);

        foreach (var token in addedTokens)
        {
            if (bytesById[token.Id] is not null)
                throw new TianGongException($"{source}: `added_tokens` uses id {token.Id} twice");
            bytesById[token.Id] = Encoding.UTF8.GetBytes(token.Content);
            isSpecial[token.Id] = token.Special;
            tokenToId[token.Content] = token.Id;
        }
        foreach (var (token, id) in data.Vocab)
        {
            if (modelVocabById[id] is not null)
                throw new TianGongException($"{source}: `model.vocab` gives id {id} to both `{modelVocabById[id]}` and `{token}`");
            modelVocabById[id] = token;
            if (tokenToId.TryGetValue(token, out int addedId) && addedId == id) continue; // an added token also listed in vocab
            bytesById[id] = ByteLevelAlphabet.Unspell(token)
                ?? throw new TianGongException($"{source}: `model.vocab` token `{token}` (id {id}) is not spelled in the byte-level alphabet");
            tokenToId.TryAdd(token, id);
        }

        Array.Fill(byteIds, -1);
        for (int b = 0; b < 256; b++)
        {
            if (!data.Vocab.TryGetValue(ByteLevelAlphabet.ToChar((byte)b).ToString(), out byteIds[b]))
                throw new TianGongException($"{source}: `model.vocab` lacks the token for byte 0x{b:X2}, so some text could not be encoded");
        }

        mergeNames = [.. data.Merges];
        var merges = new BpeMerge[mergeNames.Length];
        for (int i = 0; i < merges.Length; i++)
        {
            var (left, right) = mergeNames[i];
            if (!data.Vocab.TryGetValue(left, out int l) || !data.Vocab.TryGetValue(right, out int r)
                || !data.Vocab.TryGetValue(left + right, out int result))
                throw new TianGongException($"{source}: `model.merges[{i}]` (`{left}`, `{right}`) uses or makes a token missing from `model.vocab`");
            merges[i] = new BpeMerge(l, r, result);
        }
        mergeTable = new BpeMergeTable(merges);

        addedTokenUtf8 = [.. addedTokens.Select(t => Encoding.UTF8.GetBytes(t.Content))];
        SpecialTokens = [.. addedTokens.Where(t => t.Special).Select(t => t.Content)];
        int roleId = tokenToId.TryGetValue(BpeTrainerOptions.EndOfText, out int eot) && isSpecial[eot] ? eot
            : addedTokens.FirstOrDefault(t => t.Special)?.Id ?? -1;
        BosId = EosId = PadId = roleId;
        textTokenizer = CreateTextTokenizer(data);
        try
        {
            splitPattern = data.SplitPattern is null ? null : new CodePointRegex(data.SplitPattern, $"{source}: the Split pre-tokenizer");
        }
        catch (ArgumentException e)
        {
            throw new TianGongException($"{source}: the Split pre-tokenizer's regex is not one .NET can run ({e.Message})", e);
        }
        (nfc, ignoreMerges, this.source) = (data.Nfc, data.IgnoreMerges, source);
    }

    /// <summary>Number of ids (highest id + 1).</summary>
    public int VocabSize => bytesById.Length;

    /// <summary>
    /// Beginning/end-of-sequence and padding id: <c>&lt;|endoftext|&gt;</c> when it is a special token, otherwise
    /// the lowest-id special token; -1 when the tokenizer has no special tokens.
    /// </summary>
    public int BosId { get; }

    /// <inheritdoc cref="BosId"/>
    public int EosId { get; }

    /// <inheritdoc cref="BosId"/>
    public int PadId { get; }

    /// <summary>Contents of the special added tokens, by ascending id.</summary>
    public IReadOnlyList<string> SpecialTokens { get; }

    /// <summary>Our files carry no template, so <see cref="Tokenizers.ChatTemplate.Default"/> (ChatML).</summary>
    public ChatTemplate? ChatTemplate => ChatTemplate.Default;

    private bool IsGpt2Style => splitPattern is null && !nfc && !ignoreMerges;

    /// <summary>Loads a Hugging Face tokenizer.json holding a byte-level BPE (merges in either format).</summary>
    public static ByteLevelBpeTokenizer Load(string tokenizerJsonPath) =>
        new(TokenizerJson.Read(tokenizerJsonPath), tokenizerJsonPath);

    /// <summary>Writes tokenizer.json atomically: a temp file in the same folder, then a rename over <paramref name="path"/>.</summary>
    public void Save(string path)
    {
        // The writer knows GPT-2's pre-tokenizer only; writing that for a Llama 3 or Qwen2 file would change its ids.
        if (!IsGpt2Style) throw new TianGongException($"{path}: only GPT-2-style byte-level tokenizers are saved; this one has a Split regex, NFC or ignore_merges");
        TokenizerJson.Write(path, modelVocabById, mergeNames, addedTokens);
    }

    /// <summary>The id of a vocabulary token (spelled in the byte-level alphabet, e.g. "Ġthe") or an added token's content.</summary>
    public int? TokenToId(string token) => tokenToId.TryGetValue(token, out int id) ? id : null;

    /// <summary>
    /// Encodes text; added-token strings in it become their single ids. Through our merge table, whose pre-tokenizer
    /// matches code points as HF's does (Microsoft.ML.Tokenizers' regex would see UTF-16 surrogates).
    /// </summary>
    public int[] Encode(string text) => EncodeBytes(Encoding.UTF8.GetBytes(nfc ? text.Normalize(NormalizationForm.FormC) : text));

    /// <summary>The files this class writes have no post-processor, so special tokens are never added.</summary>
    public int[] Encode(string text, bool addSpecialTokens) => Encode(text);

    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false)
    {
        var kept = new List<int>(ids.Length);
        foreach (int id in ids)
        {
            CheckId(id);
            if (!(skipSpecialTokens && isSpecial[id])) kept.Add(id);
        }
        return textTokenizer.Decode(kept, considerSpecialTokens: true);
    }

    /// <summary>
    /// Encodes any bytes, including invalid UTF-8: valid runs are split as <see cref="Encode"/> splits text
    /// (so valid UTF-8 gets the same ids), and each run of invalid bytes is a piece of its own.
    /// </summary>
    public int[] EncodeBytes(ReadOnlySpan<byte> bytes)
    {
        var ids = new List<int>(bytes.Length / 2 + 1);
        while (!bytes.IsEmpty)
        {
            int added = FindAddedToken(bytes, out int at);
            EncodeOrdinaryBytes(added < 0 ? bytes : bytes[..at], ids);
            if (added < 0) break;
            ids.Add(addedTokens[added].Id);
            bytes = bytes[(at + addedTokenUtf8[added].Length)..];
        }
        return [.. ids];
    }

    /// <summary>The exact bytes <paramref name="ids"/> stand for.</summary>
    public byte[] DecodeBytes(ReadOnlySpan<int> ids)
    {
        int length = 0;
        foreach (int id in ids) length += TokenBytesSpan(id).Length;
        var output = new byte[length];
        int written = 0;
        foreach (int id in ids)
        {
            var token = TokenBytesSpan(id);
            token.CopyTo(output.AsSpan(written));
            written += token.Length;
        }
        return output;
    }

    /// <summary>The raw bytes token <paramref name="id"/> decodes to (UTF-8 content for added tokens); may be partial UTF-8.</summary>
    public byte[] TokenBytes(int id) => TokenBytesSpan(id).ToArray();

    private ReadOnlySpan<byte> TokenBytesSpan(int id)
    {
        CheckId(id);
        return bytesById[id] ?? throw new ArgumentOutOfRangeException(nameof(id), id, "No token has this id.");
    }

    private void CheckId(int id)
    {
        if ((uint)id >= (uint)bytesById.Length || bytesById[id] is null)
            throw new ArgumentOutOfRangeException(nameof(id), id, $"Token ids run from 0 to {bytesById.Length - 1} and this one has no token.");
    }

    private int FindAddedToken(ReadOnlySpan<byte> bytes, out int position)
    {
        position = -1;
        int best = -1;
        for (int t = 0; t < addedTokenUtf8.Length; t++)
        {
            int at = bytes.IndexOf(addedTokenUtf8[t]);
            if (at < 0) continue;
            if (best < 0 || at < position || (at == position && addedTokenUtf8[t].Length > addedTokenUtf8[best].Length))
            {
                best = t;
                position = at;
            }
        }
        return best;
    }

    private void EncodeOrdinaryBytes(ReadOnlySpan<byte> bytes, List<int> ids)
    {
        char[] chars = ArrayPool<char>.Shared.Rent(bytes.Length);
        byte[] pieceBytes = ArrayPool<byte>.Shared.Rent(bytes.Length);
        int[] symbols = ArrayPool<int>.Shared.Rent(bytes.Length);
        try
        {
            while (!bytes.IsEmpty)
            {
                System.Text.Unicode.Utf8.ToUtf16(bytes, chars, out int validBytes, out int charCount, replaceInvalidSequences: false);
                if (validBytes > 0)
                {
                    ReadOnlySpan<char> text = chars.AsSpan(0, charCount);
                    foreach (var (start, length) in splitPattern is null ? Gpt2PreTokenizer.Pieces(text) : Gpt2PreTokenizer.Pieces(text, splitPattern))
                    {
                        int n = Encoding.UTF8.GetBytes(text.Slice(start, length), pieceBytes);
                        EncodePiece(pieceBytes.AsSpan(0, n), symbols, ids);
                    }
                    bytes = bytes[validBytes..];
                }
                else
                {
                    // Truncated sequences at the end (NeedMoreData) are invalid too: there is no more input.
                    int invalid = 0;
                    while (invalid < bytes.Length
                           && Rune.DecodeFromUtf8(bytes[invalid..], out _, out int consumed) != OperationStatus.Done)
                        invalid += Math.Max(consumed, 1);
                    EncodePiece(bytes[..invalid], symbols, ids);
                    bytes = bytes[invalid..];
                }
            }
        }
        finally
        {
            ArrayPool<int>.Shared.Return(symbols);
            ArrayPool<byte>.Shared.Return(pieceBytes);
            ArrayPool<char>.Shared.Return(chars);
        }
    }

    private void EncodePiece(ReadOnlySpan<byte> piece, int[] symbols, List<int> ids)
    {
        if (ignoreMerges && ByteLevelAlphabet.Spell(piece) is var spelled
            && tokenToId.TryGetValue(spelled, out int whole) && modelVocabById[whole] == spelled)
        {
            ids.Add(whole);
            return;
        }
        for (int i = 0; i < piece.Length; i++) symbols[i] = byteIds[piece[i]];
        int n = mergeTable.Apply(symbols.AsSpan(0, piece.Length));
        ids.AddRange(symbols.AsSpan(0, n));
    }

    private BpeTokenizer CreateTextTokenizer(TokenizerJsonData data)
    {
        var added = addedTokens.ToDictionary(t => t.Content, t => t.Id, StringComparer.Ordinal);
        return BpeTokenizer.Create(new BpeOptions(data.Vocab)
        {
            Merges = mergeNames.Select(m => $"{m.Left} {m.Right}"),
            ByteLevel = true,
            SpecialTokens = added,
            PreTokenizer = new RegexPreTokenizer(Gpt2PreTokenizer.Regex(), added),
        });
    }
}
