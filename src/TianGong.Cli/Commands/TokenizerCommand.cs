using System.CommandLine;
using System.Diagnostics;
using Spectre.Console;
using TianGong.Data;
using TianGong.Tokenizers;

namespace TianGong.Cli.Commands;

internal static class TokenizerCommand
{
    public static Command Create()
    {
        var input = new Option<string[]>("--input") { Description = "Text or JSONL files (or folders) to learn from; 'chinese-poetry' for the poetry corpus", Required = true, AllowMultipleArgumentsPerToken = true };
        var vocab = new Option<int>("--vocab-size") { Description = "Vocabulary size including the 256 byte tokens and special tokens", Required = true };
        var output = new Option<string>("--out") { Description = "Where to write tokenizer.json", Required = true };
        var minFreq = new Option<int>("--min-frequency") { Description = "Only merge pairs seen at least this often", DefaultValueFactory = _ => 2 };
        var specials = new Option<string[]?>("--special-tokens") { Description = "Special tokens (default <|endoftext|> <|im_start|> <|im_end|>); the first is bos/eos/pad", AllowMultipleArgumentsPerToken = true };
        var train = new Command("train", "Train a byte-level BPE tokenizer and save it as Hugging Face tokenizer.json") { input, vocab, output, minFreq, specials };
        train.SetAction(parse => CliRunner.Run(() =>
        {
            var options = new BpeTrainerOptions(parse.GetValue(vocab), parse.GetValue(minFreq));
            if (parse.GetValue(specials) is { Length: > 0 } s) options = options with { SpecialTokens = s };
            if (options.VocabSize < 257) throw new TianGongException($"--vocab-size: must be at least 257 (256 bytes + special tokens), got {options.VocabSize}");
            var texts = parse.GetValue(input)!.SelectMany(path => Corpus.Open(path, new CorpusOptions(Status: Console.Error.WriteLine)));
            var clock = Stopwatch.StartNew();
            var tokenizer = ByteLevelBpeTrainer.Train(texts, options);
            var outPath = parse.GetValue(output)!;
            tokenizer.Save(outPath);
            AnsiConsole.MarkupLineInterpolated($"[green]saved[/] {outPath}: {tokenizer.VocabSize} tokens, trained in {clock.Elapsed.TotalSeconds:F1} s");
            return 0;
        }));
        return new Command("tokenizer", "Tokenizer tools") { train };
    }
}
