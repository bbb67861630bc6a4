using System.Text;
using System.Text.Json.Nodes;
using TianGong.Tokenizers;
using Xunit;

namespace TianGong.Tests.Tokenizers;

public sealed class ByteLevelBpeTests : IDisposable
{
    private static readonly string[] Poems =
    [
        "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。",
        "春眠不覺曉，處處聞啼鳥。夜來風雨聲，花落知多少。",
        "白日依山盡，黃河入海流。欲窮千里目，更上一層樓。",
        "紅豆生南國，春來發幾枝。願君多采擷，此物最相思。",
        "千山鳥飛絕，萬徑人蹤滅。孤舟蓑笠翁，獨釣寒江雪。",
        "國破山河在，城春草木深。感時花濺淚，恨別鳥驚心。",
    ];

    private static readonly string[] English =
    [
        "The quick brown fox jumps over the lazy dog.",
        "It's a truth universally acknowledged that we'll need more tokens, isn't it?",
        "Numbers like 12345 and 2024 appear in text too.",
    ];

    private static readonly string[] Emoji = ["I love 🐼 and 🍵! 🎉🎉", "天氣很好 ☀️ 出去走走 🚶"];

    private readonly string folder = Directory.CreateTempSubdirectory("tiangong-tok-").FullName;

    public void Dispose() => Directory.Delete(folder, recursive: true);

    private static IEnumerable<string> Corpus() =>
        Enumerable.Range(0, 20).SelectMany(i => Poems.Concat(English).Concat(Emoji).Select(t => i % 2 == 0 ? t : t + "\n"));

    private static ByteLevelBpeTokenizer TrainSmall(int vocabSize = 600) =>
        ByteLevelBpeTrainer.Train(Corpus(), new BpeTrainerOptions(vocabSize));

    [Theory]
    [InlineData("床前明月光，疑是地上霜。")]
    [InlineData("Hello 世界! The fox 🦊 jumps over 千山 at 12:30.")]
    [InlineData("  leading spaces, tabs\tand\nnewlines  \n\n")]
    [InlineData("emoji only: 🐼🍵🎉👨‍👩‍👧")]
    [InlineData("")]
    public void TextRoundTripsThroughBothPathsWithSameIds(string text)
    {
        var tokenizer = TrainSmall();

        int[] ids = tokenizer.Encode(text);
        Assert.Equal(text, tokenizer.Decode(ids));
        Assert.Equal(ids, tokenizer.EncodeBytes(Encoding.UTF8.GetBytes(text)));
        Assert.Equal(Encoding.UTF8.GetBytes(text), tokenizer.DecodeBytes(ids));
    }

    [Fact]
    public void TextAndBytePathsAgreeOnEveryCorpusLine()
    {
        var tokenizer = TrainSmall();
        foreach (var text in Corpus().Take(Poems.Length + English.Length + Emoji.Length))
            Assert.Equal(tokenizer.Encode(text), tokenizer.EncodeBytes(Encoding.UTF8.GetBytes(text)));
    }

    [Fact]
    public void RandomBytesIncludingInvalidUtf8RoundTripExactly()
    {
        var tokenizer = TrainSmall();
        var random = new Random(1234);
        byte[][] samples =
        [
            [0xFF, 0xFE, 0x80, 0xC0, 0xAF],
            [0xE6, 0x98, (byte)'a', 0xE6, 0x98, 0xA5],                // truncated 春 before a full one
            [.. Encoding.UTF8.GetBytes("春眠"), 0xE7, .. Encoding.UTF8.GetBytes("<|endoftext|>x")],
            [0xED, 0xA0, 0x80],                                      // an encoded surrogate: invalid UTF-8
        ];
        var randomSamples = Enumerable.Range(0, 200).Select(_ =>
        {
            var bytes = new byte[random.Next(0, 64)];
            random.NextBytes(bytes);
            return bytes;
        });

        foreach (var bytes in samples.Concat(randomSamples))
        {
            int[] ids = tokenizer.EncodeBytes(bytes);
            Assert.Equal(bytes, tokenizer.DecodeBytes(ids));
        }
    }

    [Fact]
    public void SpecialTokensEncodeToSingleIds()
    {
        var tokenizer = TrainSmall();
        int eot = tokenizer.TokenToId("<|endoftext|>")!.Value;
        int start = tokenizer.TokenToId("<|im_start|>")!.Value;
        int end = tokenizer.TokenToId("<|im_end|>")!.Value;
        Assert.Equal(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], tokenizer.SpecialTokens);
        Assert.Equal(eot, tokenizer.BosId);
        Assert.Equal(eot, tokenizer.EosId);
        Assert.Equal(eot, tokenizer.PadId);

        string text = "<|im_start|>user\n春眠不覺曉<|im_end|><|endoftext|>";
        int[] ids = tokenizer.Encode(text);
        Assert.Equal(start, ids[0]);
        Assert.Equal([end, eot], ids[^2..]);
        Assert.Equal(1, ids.Count(id => id == start));
        Assert.Equal(ids, tokenizer.EncodeBytes(Encoding.UTF8.GetBytes(text)));
        Assert.Equal(text, tokenizer.Decode(ids));
        Assert.Equal("user\n春眠不覺曉", tokenizer.Decode(ids, skipSpecialTokens: true));
        Assert.Equal(Encoding.UTF8.GetBytes("<|im_end|>"), tokenizer.TokenBytes(end));
    }

    [Fact]
    public void TokenBytesConcatenateToTheDecodedBytes()
    {
        var tokenizer = TrainSmall();
        int[] ids = tokenizer.Encode("春來發幾枝");
        byte[] joined = [.. ids.SelectMany(tokenizer.TokenBytes)];
        Assert.Equal(Encoding.UTF8.GetBytes("春來發幾枝"), joined);
        // Byte tokens exist for every byte, so a lone lead byte has a token of exactly that byte.
        Assert.Contains(Enumerable.Range(0, tokenizer.VocabSize), id => tokenizer.TokenBytes(id) is [0xE6]);
    }

    [Fact]
    public void MergesShortenChineseTextComparedWithRawBytes()
    {
        var tokenizer = TrainSmall();
        string text = string.Concat(Poems);
        int bytes = Encoding.UTF8.GetByteCount(text);
        int tokens = tokenizer.Encode(text).Length;
        // A poem character is 3 bytes; trained merges should at least give each frequent character one token.
        Assert.True(tokens * 3 <= bytes, $"{tokens} tokens for {bytes} bytes");
    }

    [Fact]
    public void VocabSizeIsReachedAndMinFrequencyStopsMerging()
    {
        Assert.Equal(600, TrainSmall(600).VocabSize);
        // Every pair in the corpus occurs at most 20*2 times, so a higher minimum learns no merges at all.
        var noMerges = ByteLevelBpeTrainer.Train(Corpus(), new BpeTrainerOptions(600, MinFrequency: 1000));
        Assert.Equal(3 + 256, noMerges.VocabSize);
    }

    [Fact]
    public void SaveLoadKeepsEncodingsAndResaveIsByteIdentical()
    {
        var tokenizer = TrainSmall();
        string first = Path.Combine(folder, "tokenizer.json");
        string second = Path.Combine(folder, "again.json");
        tokenizer.Save(first);
        var loaded = ByteLevelBpeTokenizer.Load(first);
        loaded.Save(second);

        Assert.Equal(File.ReadAllBytes(first), File.ReadAllBytes(second));
        Assert.Equal(tokenizer.VocabSize, loaded.VocabSize);
        foreach (var text in Corpus().Take(12).Append("<|im_start|>混合 text 🐼<|im_end|>"))
            Assert.Equal(tokenizer.Encode(text), loaded.Encode(text));
        Assert.Empty(Directory.GetFiles(folder, "*.tmp*")); // the temp file was renamed, not left behind
    }

    [Fact]
    public void SavedFileIsHuggingFaceByteLevelBpe()
    {
        var tokenizer = TrainSmall();
        string path = Path.Combine(folder, "tokenizer.json");
        tokenizer.Save(path);
        var json = JsonNode.Parse(File.ReadAllText(path))!;

        Assert.Equal("BPE", (string?)json["model"]!["type"]);
        Assert.Equal("ByteLevel", (string?)json["pre_tokenizer"]!["type"]);
        Assert.False((bool)json["pre_tokenizer"]!["add_prefix_space"]!);
        Assert.Equal("ByteLevel", (string?)json["decoder"]!["type"]);
        var firstMerge = json["model"]!["merges"]![0]!.AsArray();
        Assert.Equal(2, firstMerge.Count);
        var eot = json["added_tokens"]![0]!;
        Assert.Equal(0, (int)eot["id"]!);
        Assert.Equal("<|endoftext|>", (string?)eot["content"]);
        Assert.True((bool)eot["special"]!);
        Assert.False((bool)eot["normalized"]!);
        Assert.Equal(0, (int)json["model"]!["vocab"]!["<|endoftext|>"]!);
        Assert.Equal(tokenizer.TokenToId("Ġ"), (int)json["model"]!["vocab"]!["Ġ"]!);
    }

    [Fact]
    public void TrainingIsDeterministic()
    {
        string a = Path.Combine(folder, "a.json"), b = Path.Combine(folder, "b.json");
        TrainSmall().Save(a);
        ByteLevelBpeTrainer.Train(Corpus().Reverse(), new BpeTrainerOptions(600)).Save(b);
        Assert.Equal(File.ReadAllBytes(a), File.ReadAllBytes(b));
    }

    [Fact]
    public void LoadsOlderStringMergesFormat()
    {
        // A hand-made GPT-2-style file: 256 byte tokens in byte order, then "h e" → "he", "he llo"... in "a b" form.
        var vocab = new JsonObject();
        for (int b = 0; b < 256; b++) vocab[ByteLevelAlphabet.ToChar((byte)b).ToString()] = b;
        string[] merged = ["he", "ll", "llo", "hello", "Ġw"];
        for (int i = 0; i < merged.Length; i++) vocab[merged[i]] = 256 + i;
        vocab["<|endoftext|>"] = 261;
        var json = new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray(new JsonObject { ["id"] = 261, ["content"] = "<|endoftext|>", ["special"] = true }),
            ["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE",
                ["vocab"] = vocab,
                ["merges"] = new JsonArray("h e", "l l", "ll o", "he llo", "Ġ w"),
            },
        };
        string path = Path.Combine(folder, "old.json");
        File.WriteAllText(path, json.ToJsonString());

        var tokenizer = ByteLevelBpeTokenizer.Load(path);
        Assert.Equal([259, 260, (int)'o', (int)'r', (int)'l', (int)'d', 261], tokenizer.Encode("hello world<|endoftext|>"));
        Assert.Equal([259, 260, (int)'o', (int)'r', (int)'l', (int)'d', 261], tokenizer.EncodeBytes(Encoding.UTF8.GetBytes("hello world<|endoftext|>")));
        Assert.Equal(261, tokenizer.EosId);

        // Re-saved in the list-of-pairs form, it loads to the same encodings.
        string resaved = Path.Combine(folder, "new.json");
        tokenizer.Save(resaved);
        Assert.Equal("he", (string?)JsonNode.Parse(File.ReadAllText(resaved))!["model"]!["merges"]![3]![0]);
        Assert.Equal(tokenizer.Encode("hello hello"), ByteLevelBpeTokenizer.Load(resaved).Encode("hello hello"));
    }

    [Theory]
    [InlineData("""{"version": "1.0"}""", "missing `model` object")]
    [InlineData("""{"model": {"type": "BPE", "merges": []}}""", "missing `model.vocab`")]
    [InlineData("""{"model": {"type": "Unigram", "vocab": [], "merges": []}}""", "unsupported model type `Unigram`")]
    [InlineData("""{"model": {"type": "BPE", "vocab": {"a": 0}}}""", "missing `model.merges`")]
    [InlineData("""{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [7]}}""", "`model.merges[0]`")]
    [InlineData("""{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}""", "lacks the token for byte 0x00")]
    [InlineData("""{"model": {"type": "BPE", "vocab": {"a": 0}""", "not valid JSON")]
    public void MalformedFilesNameTheFileAndTheProblem(string content, string problem)
    {
        string path = Path.Combine(folder, "bad-tokenizer.json");
        File.WriteAllText(path, content);
        var error = Assert.Throws<TianGongException>(() => ByteLevelBpeTokenizer.Load(path));
        Assert.Contains(path, error.Message);
        Assert.Contains(problem, error.Message);
    }

    [Fact]
    public void RejectsOptionsThatCannotHoldTheByteAlphabet()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => ByteLevelBpeTrainer.Train(Corpus(), new BpeTrainerOptions(100)));
        Assert.Throws<ArgumentException>(() => ByteLevelBpeTrainer.Train(Corpus(),
            new BpeTrainerOptions(600) { SpecialTokens = ["<s>", "<s>"] }));
    }
}
