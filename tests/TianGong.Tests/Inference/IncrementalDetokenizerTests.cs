using TianGong.Inference;
using TianGong.Tokenizers;

namespace TianGong.Tests.Inference;

/// <summary>
/// Incremental detokenization against full decoding, property-style: many random id sequences (random ids, specials
/// included, and encodings of text with CJK, emoji and accents whose characters span several byte tokens) through each
/// kind of decoder the repository has: byte-level BPE (trained and HF's), SentencePiece with byte fallback (Llama 2),
/// Metaspace, WordPiece and BPE suffixes. After every token the stable and pending text together must be the full decode,
/// and stable text must only grow.
/// </summary>
public sealed class IncrementalDetokenizerTests : IDisposable
{
    private readonly string folder = Directory.CreateTempSubdirectory("tiangong-detok-").FullName;

    public void Dispose() => Directory.Delete(folder, recursive: true);

    private static readonly string[] Fragments =
    [
        "春眠不覺曉", "處處聞啼鳥", "，", "。\n", "😀", "👨‍👩‍👧", "🇨🇳", " hello", " world", "don't", " .", "  ", "é", "naïve", "\n", "a", " ",
        "夜來風雨聲", "𠀀", "!?", "▁x",
    ];

    internal static ITextTokenizer Poetry() => ByteLevelBpeTrainer.Train(
        Enumerable.Repeat(new[] { "春眠不覺曉，處處聞啼鳥。\n夜來風雨聲，花落知多少。", "hello world, don't 😀 naïve" }, 20).SelectMany(p => p),
        new BpeTrainerOptions(VocabSize: 320, MinFrequency: 2));

    private ITextTokenizer Load(string name)
    {
        if (name == "poetry") return Poetry();
        if (name == "llama2")
        {
            var dir = Directory.CreateDirectory(Path.Combine(folder, "llama2")).FullName;
            File.Copy(Path.Combine(AppContext.BaseDirectory, "Fixtures", "tokenizers", "sentencepiece", "llama2-tokenizer.model"), Path.Combine(dir, TokenizerLoader.SentencePieceFile));
            File.WriteAllText(Path.Combine(dir, TokenizerLoader.TokenizerConfigFile), """
                {"tokenizer_class": "LlamaTokenizer", "add_bos_token": true, "add_eos_token": false, "legacy": true,
                 "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": null}
                """);
            return TokenizerLoader.Load(dir)!;
        }
        return PipelineTokenizer.Load(Path.Combine(AppContext.BaseDirectory, "Fixtures", "tokenizers", "components", name + ".json"));
    }

    /// <summary>Half the sequences are random ids, half encodings of random text with a random id spliced in now and then.</summary>
    internal static List<int[]> RandomSequences(ITextTokenizer tokenizer, int count, int seed)
    {
        var random = new Random(seed);
        var sequences = new List<int[]>();
        for (int i = 0; i < count; i++)
        {
            var ids = new List<int>();
            if (i % 2 == 0)
                for (int n = random.Next(1, 40); ids.Count < n;) ids.Add(random.Next(tokenizer.VocabSize));
            else
            {
                var text = string.Concat(Enumerable.Range(0, random.Next(1, 12)).Select(_ => Fragments[random.Next(Fragments.Length)]));
                foreach (int id in tokenizer.Encode(text))
                {
                    ids.Add(id);
                    if (random.Next(8) == 0) ids.Add(random.Next(tokenizer.VocabSize));
                }
                if (ids.Count == 0) ids.Add(random.Next(tokenizer.VocabSize));
            }
            sequences.Add([.. ids]);
        }
        return sequences;
    }

    [Theory]
    [InlineData("poetry")]
    [InlineData("llama2")]
    [InlineData("bytelevel_roberta")]
    [InlineData("bytelevel_added")]
    [InlineData("unigram_metaspace")]
    [InlineData("wordpiece_bert")]
    [InlineData("bpe_suffix")]
    public void Stable_and_pending_text_is_the_full_decode_after_every_token(string name)
    {
        var tokenizer = Load(name);
        foreach (bool skip in new[] { true, false })
            foreach (var ids in RandomSequences(tokenizer, 120, seed: name.Length * 7 + (skip ? 1 : 0)))
            {
                var detok = new IncrementalDetokenizer(tokenizer, skip);
                string stable = "";
                for (int n = 1; n <= ids.Length; n++)
                {
                    detok.Add(ids[n - 1]);
                    string full = tokenizer.Decode(ids.AsSpan(0, n), skip);
                    string now = detok.Stable.ToString();
                    Assert.True(now.StartsWith(stable, StringComparison.Ordinal), $"{name}: stable text changed at token {n} of [{string.Join(",", ids)}]");
                    Assert.True(full == now + detok.Pending, $"{name}: [{string.Join(",", ids[..n])}] decodes to {Escape(full)}, incrementally {Escape(now)} + {Escape(detok.Pending)}");
                    stable = now;
                }
            }
    }

    [Fact]
    public void Text_of_a_character_split_over_byte_tokens_waits_until_the_character_is_complete()
    {
        var tokenizer = Poetry();
        var bytes = System.Text.Encoding.UTF8.GetBytes("😀");
        var ids = bytes.Select(b => ((ByteLevelBpeTokenizer)tokenizer).EncodeBytes([b]).Single()).ToArray();
        var detok = new IncrementalDetokenizer(tokenizer);
        for (int i = 0; i < ids.Length - 1; i++)
        {
            detok.Add(ids[i]);
            Assert.Equal(0, detok.Stable.Length);
        }
        detok.Add(ids[^1]);
        Assert.Equal("😀", detok.Stable.ToString());
        Assert.Equal("", detok.Pending);
    }

    [Fact]
    public void Streamed_text_and_stop_strings_match_full_decoding_through_the_decoding_core()
    {
        var tokenizer = Poetry();
        var random = new Random(5);
        int vocab = tokenizer.VocabSize;
        foreach (var ids in RandomSequences(tokenizer, 160, seed: 11))
        {
            // Stop strings taken from the text itself (so they occur), or absent ones.
            string all = tokenizer.Decode(ids, skipSpecialTokens: true).Replace("\uFFFD", "");
            var stops = new List<string>();
            for (int k = random.Next(0, 3); k > 0 && all.Length > 0; k--)
            {
                int at = random.Next(all.Length), length = Math.Min(random.Next(1, 4), all.Length - at);
                if (!char.IsLowSurrogate(all[at]) && !char.IsHighSurrogate(all[at + length - 1])) stops.Add(all.Substring(at, length));
            }
            if (random.Next(4) == 0) stops.Add("不在其中");
            var options = new SamplingOptions(MaxNewTokens: ids.Length, Temperature: 0, StopStrings: stops.Count > 0 ? stops : null, StopAtEos: false);
            using var sequence = new DecodingSequence(options, vocab, [], tokenizer, [1]);
            var streamed = new System.Text.StringBuilder();
            int steps = 0;
            foreach (int id in ids)
            {
                using var logits = full(vocab, 0f).index_fill_(0, tensor(new long[] { id }), 1f);
                var step = sequence.Step(logits);
                Assert.Equal(id, step.Token);
                steps++;
                streamed.Append(sequence.NextText());
                if (step.FinishReason is not null) break;
            }

            // Reference: the first prefix whose full decode holds a stop string ends the sequence there, cut at it.
            int expectedSteps = ids.Length;
            int? expectedStop = null;
            for (int n = 1; n <= ids.Length && expectedStop is null; n++)
            {
                string text = tokenizer.Decode(ids.AsSpan(0, n), skipSpecialTokens: true);
                var found = stops.Select(s => text.IndexOf(s, StringComparison.Ordinal)).Where(i => i >= 0).ToList();
                if (found.Count > 0) (expectedStop, expectedSteps) = (found.Min(), n);
            }
            string context = $"[{string.Join(",", ids)}] stops [{string.Join("|", stops.Select(Escape))}]";
            Assert.True(expectedSteps == steps, $"{context}: {steps} steps, expected {expectedSteps}");
            Assert.Equal(expectedStop, sequence.StopAt);
            Assert.True(sequence.Text() == streamed.ToString(), $"{context}: streamed {Escape(streamed.ToString())}, text {Escape(sequence.Text())}");
        }
    }

    private static string Escape(string s) => string.Concat(s.Select(c => c < ' ' || c > '~' ? $"\\u{(int)c:X4}" : c.ToString()));
}
