using System.Diagnostics;
using System.Text;
using System.Text.Json;
using TianGong.Tokenizers;

namespace TianGong.Bench;

/// <summary>
/// <c>tokenizer [megabytes] [vocab]</c>: trains a byte-level BPE on ~20 MB of classical Chinese poetry (Tang shi +
/// Song ci, repeated if the corpus is smaller) and reports training time and encode throughput.
/// <c>tokenizer compare</c>: encode MB/s of our tokenizer.json pipeline beside Hugging Face's Rust tokenizers
/// (@anush008/tokenizers in node), single thread each, on the same texts and tokenizer files (see <see cref="TokenizerComparison"/>).
/// </summary>
public static class TokenizerBench
{
    public static int Run(string[] args)
    {
        if (args is ["compare", .. var rest]) return TokenizerComparison.Run(rest);
        double megabytes = args.Length > 0 ? double.Parse(args[0]) : 20;
        int vocabSize = args.Length > 1 ? int.Parse(args[1]) : 8000;
        string home = Environment.GetEnvironmentVariable("TIANGONG_HOME")
            ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "tiangong");
        string root = Path.Combine(home, "datasets", "chinese-poetry");
        if (!Directory.Exists(root))
        {
            Console.Error.WriteLine($"chinese-poetry corpus not found at {root}");
            return 1;
        }

        long targetBytes = (long)(megabytes * 1024 * 1024);
        var poems = ReadPoems(root, targetBytes);
        var corpus = Repeat(poems, targetBytes, out long corpusBytes);
        double corpusMb = corpusBytes / 1048576.0;
        Console.WriteLine($"corpus: {corpus.Count} poems, {corpusMb:F1} MB UTF-8 ({poems.Count} distinct poems)");

        var clock = Stopwatch.StartNew();
        var tokenizer = ByteLevelBpeTrainer.Train(corpus, new BpeTrainerOptions(vocabSize));
        double trainSeconds = clock.Elapsed.TotalSeconds;
        Console.WriteLine($"train: vocab {tokenizer.VocabSize} in {trainSeconds:F2} s ({corpusMb / trainSeconds:F2} MB/s)");

        // Encode throughput on the distinct poems (up to the target size), for both paths.
        long sampleBytes = poems.Sum(p => (long)Encoding.UTF8.GetByteCount(p));
        long tokens = 0;
        clock.Restart();
        foreach (var poem in poems) tokens += tokenizer.Encode(poem).Length;
        double encodeSeconds = clock.Elapsed.TotalSeconds;
        double sampleMb = sampleBytes / 1048576.0;
        Console.WriteLine($"encode (text, `Encode`): {sampleMb:F1} MB in {encodeSeconds:F2} s "
            + $"({sampleMb / encodeSeconds:F2} MB/s), {tokens} tokens, {(double)sampleBytes / tokens:F2} bytes/token");

        var utf8 = poems.Select(Encoding.UTF8.GetBytes).ToArray();
        long byteTokens = 0;
        clock.Restart();
        foreach (var poem in utf8) byteTokens += tokenizer.EncodeBytes(poem).Length;
        double byteSeconds = clock.Elapsed.TotalSeconds;
        Console.WriteLine($"encode (UTF-8 bytes, `EncodeBytes`): {sampleMb:F1} MB in {byteSeconds:F2} s ({sampleMb / byteSeconds:F2} MB/s), {byteTokens} tokens");
        return tokens == byteTokens ? 0 : 3;
    }

    /// <summary>Song ci (up to half the target) then Tang shi, title + paragraphs per poem, until about <paramref name="targetBytes"/>.</summary>
    internal static List<string> ReadPoems(string root, long targetBytes)
    {
        var poems = new List<string>();
        long bytes = 0;
        ReadFiles(Path.Combine(root, "dist", "songci"), "ci.song.*.json", targetBytes / 2, poems, ref bytes);
        ReadFiles(Path.Combine(root, "dist", "quantangshi"), "poet.tang.*.json", targetBytes, poems, ref bytes);
        return poems;
    }

    private static void ReadFiles(string folder, string pattern, long limitBytes, List<string> poems, ref long bytes)
    {
        foreach (var file in Directory.GetFiles(folder, pattern).OrderBy(f => f, StringComparer.Ordinal))
        {
            using var document = JsonDocument.Parse(File.ReadAllBytes(file));
            foreach (var poem in document.RootElement.EnumerateArray())
            {
                if (bytes >= limitBytes) return;
                var text = new StringBuilder();
                // Tang poems have a title; Song ci name their tune pattern ("rhythmic") instead.
                if (poem.TryGetProperty("title", out var title) || poem.TryGetProperty("rhythmic", out title))
                    text.Append(title.GetString()).Append('\n');
                if (poem.TryGetProperty("paragraphs", out var paragraphs))
                    foreach (var line in paragraphs.EnumerateArray()) text.Append(line.GetString()).Append('\n');
                var s = text.ToString();
                poems.Add(s);
                bytes += Encoding.UTF8.GetByteCount(s);
            }
        }
    }

    private static List<string> Repeat(List<string> poems, long targetBytes, out long bytes)
    {
        var corpus = new List<string>();
        bytes = 0;
        while (bytes < targetBytes && poems.Count > 0)
        {
            foreach (var poem in poems)
            {
                corpus.Add(poem);
                bytes += Encoding.UTF8.GetByteCount(poem);
                if (bytes >= targetBytes) break;
            }
        }
        return corpus;
    }
}
