using System.CommandLine;
using Spectre.Console;
using TianGong.Data;
using TianGong.Poetry;
using TianGong.Tokenizers;
using TianGong.Tuning.Data;

namespace TianGong.Cli.Commands;

internal static class DataCommand
{
    public static Command Create()
    {
        var corpus = new Option<string>("--corpus") { Description = "'chinese-poetry' or a text/JSONL file or folder", Required = true };
        var tokenizer = new Option<string>("--tokenizer") { Description = "tokenizer.json to encode with", Required = true };
        var output = new Option<string>("--out") { Description = "Output folder for token shards and index.json", Required = true };
        var valFraction = new Option<double>("--val-fraction") { Description = "Share of documents held out for validation", DefaultValueFactory = _ => 0.01 };
        var form = new Option<PoetryForm>("--form") { Description = "chinese-poetry only: any, jueju (4 lines) or lushi (8 lines)", DefaultValueFactory = _ => PoetryForm.Any };
        var field = new Option<string>("--json-field") { Description = "JSONL only: the field that holds the text", DefaultValueFactory = _ => "text" };
        var prepare = new Command("prepare", "Tokenize a corpus into memory-mapped token shards with a train/validation split") { corpus, tokenizer, output, valFraction, form, field };
        prepare.SetAction(parse => CliRunner.Run(() =>
        {
            var tokenizerPath = parse.GetValue(tokenizer)!;
            RegularFile.Require(tokenizerPath, "--tokenizer file (tokenizer.json)");
            var outDir = parse.GetValue(output)!;
            if (RegularFile.KindOf(outDir) is { } kind and not "directory")
                throw new TianGongException($"--out {outDir}: is a {kind}; expected a folder to write token shards into");
            var tok = ByteLevelBpeTokenizer.Load(tokenizerPath);
            var source = parse.GetValue(corpus)!;
            var documents = Corpus.Open(source, new CorpusOptions(new PoetryCorpusOptions(Form: parse.GetValue(form)), new TextCorpusOptions(parse.GetValue(field)!), Status: Console.Error.WriteLine));
            var writer = new TokenShardWriter(new TokenShardWriterOptions(tok.VocabSize, tok.EosId, parse.GetValue(valFraction)));
            var index = writer.Write(documents, tok.Encode, outDir, source);
            AnsiConsole.MarkupLineInterpolated($"[green]wrote[/] {outDir}: {index.Train.Tokens:N0} training and {index.Val.Tokens:N0} validation tokens");
            return 0;
        }));
        return new Command("data", "Dataset tools") { prepare, PoetryInstructionsCommand() };
    }

    /// <summary><c>data poetry-instructions</c>: the chat JSONL that <c>finetune --task sft --data poetry-instructions</c> trains on, written where the user wants it.</summary>
    private static Command PoetryInstructionsCommand()
    {
        var output = new Option<string>("--out") { Description = "Chat JSONL file to write ({\"messages\":[...]} per line)", Required = true };
        var count = new Option<int>("--count") { Description = "Conversations (one poem each)", DefaultValueFactory = _ => PoetryInstructions.DefaultCount };
        var seed = new Option<ulong>("--seed") { Description = "Picks the poems and each one's kind of request", DefaultValueFactory = _ => PoetryInstructions.DefaultSeed };
        var maxChars = new Option<int>("--max-chars") { Description = "Leave out poems with more characters than this (keeps conversations within short training windows)", DefaultValueFactory = _ => PoetryInstructions.DefaultMaxChars };
        var collections = new Option<string>("--collections") { Description = "chinese-poetry collections (tang,song,ci)", DefaultValueFactory = _ => "tang,song,ci" };
        var command = new Command("poetry-instructions", "Write a poetry instruction set from chinese-poetry: a poem for a title, continuing lines, an acrostic, naming the author")
            { output, count, seed, maxChars, collections };
        command.SetAction(parse => CliRunner.Run(() =>
        {
            var path = parse.GetValue(output)!;
            if (RegularFile.KindOf(path) is { } kind and not "file")
                throw new TianGongException($"--out {path}: is a {kind}; expected a file to write the conversations into");
            var options = new PoetryCorpusOptions(PoetryCorpusOptions.ParseCollections(parse.GetValue(collections)!.Split(',', StringSplitOptions.RemoveEmptyEntries)));
            var corpus = new PoetryCorpus(DatasetFetcher.Ensure(PoetryCorpus.Name, status: Console.Error.WriteLine), options);
            var conversations = PoetryInstructions.Build(corpus.Poems(), parse.GetValue(count), parse.GetValue(seed), parse.GetValue(maxChars));
            var parent = Path.GetDirectoryName(Path.GetFullPath(path))!;
            Directory.CreateDirectory(parent);
            PoetryInstructions.Write(path, conversations);
            AnsiConsole.MarkupLineInterpolated($"[green]wrote[/] {path}: {conversations.Count:N0} conversations");
            return 0;
        }));
        return command;
    }
}
