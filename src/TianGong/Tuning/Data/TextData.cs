using TianGong.Poetry;
using System.Security.Cryptography;
using System.Text;
using TianGong.Data;
using TianGong.Tokenizers;

namespace TianGong.Tuning.Data;

/// <summary>
/// The <c>lm</c> task's data: chinese-poetry (with its collections) or a text/JSONL file, tokenized with the model's own
/// tokenizer into token shards (the pretraining format, so the pretraining sampler serves them), cached under the
/// TianGong home keyed by the data and the tokenizer files.
/// </summary>
public static class TextData
{
    public static TokenDataset Prepare(string data, IReadOnlyList<string>? collections, ITextTokenizer tokenizer, string modelDir, string home, Action<string>? status)
    {
        if (tokenizer.EosId < 0) throw new TianGongException($"{modelDir}: the tokenizer has no end-of-sequence token, which separates documents in the lm task");
        var poetry = new PoetryCorpusOptions(PoetryCorpusOptions.ParseCollections(collections));
        var key = Hash(Path.GetFullPath(data) + "|" + poetry.Collections, TokenizerBytes(modelDir));
        var dir = Path.Combine(home, "cache", "finetune-tokens", key);
        if (File.Exists(Path.Combine(dir, TokenIndex.FileName))) return TokenDataset.Open(dir);
        var corpus = Corpus.Open(data, new CorpusOptions(Poetry: poetry, Home: home, Status: status));
        status?.Invoke($"tokenizing {data} with the model's tokenizer into {dir}");
        new TokenShardWriter(new TokenShardWriterOptions(tokenizer.VocabSize, tokenizer.EosId, ValFraction: 0.02))
            .Write(corpus, tokenizer.Encode, dir, corpus.Source);
        return TokenDataset.Open(dir);
    }

    private static string TokenizerBytes(string modelDir)
    {
        var sb = new StringBuilder();
        foreach (var file in new[] { "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "tokenizer.model" })
        {
            var path = Path.Combine(modelDir, file);
            if (File.Exists(path)) sb.Append(file).Append(Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(path))));
        }
        return sb.ToString();
    }

    private static string Hash(params string[] parts) =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(string.Join("\u0000", parts))))[..16];
}
