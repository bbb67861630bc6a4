using System.CommandLine;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
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
            // Checked before training, which can take minutes: the output must be a file path; missing folders are made.
            var outPath = parse.GetValue(output)!;
            if (Directory.Exists(outPath)) throw new TianGongException($"--out {outPath}: is a folder; give the tokenizer file's path, e.g. {Path.Combine(outPath, "tokenizer.json")}");
            var texts = parse.GetValue(input)!.SelectMany(path => Corpus.Open(path, new CorpusOptions(Status: Console.Error.WriteLine)));
            var clock = Stopwatch.StartNew();
            var tokenizer = ByteLevelBpeTrainer.Train(texts, options);
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(outPath))!);
            tokenizer.Save(outPath);
            AnsiConsole.MarkupLineInterpolated($"[green]saved[/] {outPath}: {tokenizer.VocabSize} tokens, trained in {clock.Elapsed.TotalSeconds:F1} s");
            return 0;
        }));
        return new Command("tokenizer", "Tokenizer tools") { train, Encode(), Decode(), Chat() };
    }

    private static Option<string> TokenizerOption() => new("--tokenizer")
    {
        Description = "A tokenizer.json file, or a model folder (tokenizer.json, vocab.json + merges.txt or tokenizer.model, with tokenizer_config.json)",
        Required = true,
    };

    /// <summary>A tokenizer.json file on its own, or a folder as the model commands load it.</summary>
    private static ITextTokenizer LoadTokenizer(string path)
    {
        if (File.Exists(path)) return PipelineTokenizer.Load(path);
        if (!Directory.Exists(path)) throw new TianGongException($"--tokenizer: '{path}' is neither a file nor a folder");
        return TokenizerLoader.Load(path)
            ?? throw new TianGongException($"{path}: no tokenizer (tokenizer.json, vocab.json + merges.txt or tokenizer.model)");
    }

    private static Command Encode()
    {
        var tokenizer = TokenizerOption();
        var text = new Option<string?>("--text") { Description = "Text to encode (taken literally; a leading @ is text too)" };
        var file = new Option<string?>("--file") { Description = "UTF-8 file whose whole content is encoded" };
        var pair = new Option<string?>("--pair") { Description = "A second text, encoded as the pair (text, pair) as tokenizer(text, pair) does (e.g. query and passage for a cross-encoder)" };
        var noSpecial = new Option<bool>("--no-special") { Description = "Do not add the post-processor's special tokens (bos, [CLS]/[SEP]), as add_special_tokens=False" };
        var json = new Option<bool>("--json")
        {
            Description = "Print {\"ids\": [...], \"tokens\": [...], \"offsets\": [[start, end], ...], \"type_ids\": [...]} (offsets in code points of the text, or of the pair for its tokens)",
        };
        var command = new Command("encode", "Token ids of a text, as transformers' tokenizer(text) gives them (special tokens added unless --no-special)")
            { tokenizer, text, file, pair, noSpecial, json };
        command.SetAction(parse => CliRunner.Run(() =>
        {
            var (textValue, fileValue) = (parse.GetValue(text), parse.GetValue(file));
            if ((textValue is null) == (fileValue is null)) throw new TianGongException("tokenizer encode: give exactly one of --text or --file");
            string input = textValue ?? ReadText(fileValue!);
            var tok = LoadTokenizer(parse.GetValue(tokenizer)!);
            bool addSpecial = !parse.GetValue(noSpecial);
            string? pairText = parse.GetValue(pair);
            var pipeline = tok as PipelineTokenizer;
            if (pairText is not null && pipeline is null) throw new TianGongException("tokenizer encode: --pair needs a tokenizer.json pipeline");
            if (!parse.GetValue(json))
            {
                Console.WriteLine(string.Join(",", pairText is null ? tok.Encode(input, addSpecial) : pipeline!.EncodePair(input, pairText, addSpecial)));
                return 0;
            }
            var output = new JsonObject();
            if (pipeline is not null)
            {
                var tokens = pipeline.EncodeToTokens(input, pairText, addSpecial);
                int[][] toCodePoints = [CodePointIndex(input), CodePointIndex(pairText ?? "")];
                output["ids"] = new JsonArray([.. tokens.Select(t => (JsonNode)t.Id)]);
                output["tokens"] = new JsonArray([.. tokens.Select(t => (JsonNode)t.Value)]);
                output["offsets"] = new JsonArray([.. tokens.Select(t => (JsonNode)new JsonArray(toCodePoints[t.SequenceIndex][t.Start], toCodePoints[t.SequenceIndex][t.End]))]);
                output["type_ids"] = new JsonArray([.. tokens.Select(t => (JsonNode)t.TypeId)]);
            }
            else
            {
                var ids = tok.Encode(input, addSpecial);
                output["ids"] = new JsonArray([.. ids.Select(i => (JsonNode)i)]);
                output["tokens"] = new JsonArray([.. ids.Select(i => (JsonNode)Encoding.UTF8.GetString(tok.TokenBytes(i)))]);
            }
            Console.WriteLine(output.ToJsonString(new JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));
            return 0;
        }));
        return command;
    }

    /// <summary>For each UTF-16 index of <paramref name="text"/> (and its end), the code point index, as Python counts characters.</summary>
    private static int[] CodePointIndex(string text)
    {
        var map = new int[text.Length + 1];
        int codePoint = 0;
        for (int i = 0; i < text.Length; i++)
        {
            map[i] = codePoint;
            if (!(char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))) codePoint++;
        }
        map[text.Length] = codePoint;
        return map;
    }

    private static string ReadText(string path) =>
        File.Exists(path) ? File.ReadAllText(path) : throw new TianGongException($"--file: '{path}' does not exist");

    private static Command Decode()
    {
        var tokenizer = TokenizerOption();
        var ids = new Option<string>("--ids") { Description = "Token ids, comma-separated", Required = true };
        var skip = new Option<bool>("--skip-special") { Description = "Leave special tokens out, as skip_special_tokens=True" };
        var command = new Command("decode", "The text of token ids, as the tokenizer's decoder gives it") { tokenizer, ids, skip };
        command.SetAction(parse => CliRunner.Run(() =>
        {
            var tok = LoadTokenizer(parse.GetValue(tokenizer)!);
            var idValues = CliRunner.ParseIds(parse.GetValue(ids)!, "--ids");
            foreach (int id in idValues)
            {
                bool known = id < tok.VocabSize && (tok is not PipelineTokenizer pipeline || pipeline.IdToToken(id) is not null);
                if (!known) throw new TianGongException($"--ids: {id} is not a token id of this tokenizer (0..{tok.VocabSize - 1})");
            }
            Console.WriteLine(tok.Decode(idValues, parse.GetValue(skip)));
            return 0;
        }));
        return command;
    }

    private static Command Chat()
    {
        var tokenizer = new Option<string>("--tokenizer") { Description = "Model folder with the chat template (chat_template.jinja, else tokenizer_config.json's chat_template)", Required = true };
        var messages = new Option<string>("--messages")
        {
            Description = "JSON file: {\"messages\": [...], \"tools\": [...]} in the OpenAI/transformers shape (or just the messages array)",
            Required = true,
        };
        var generation = new Option<bool>("--add-generation-prompt") { Description = "End with the header of the assistant's reply" };
        var command = new Command("chat", "The prompt a chat template renders, exactly (nothing added, no trailing newline)") { tokenizer, messages, generation };
        command.SetAction(parse => CliRunner.Run(() =>
        {
            var dir = parse.GetValue(tokenizer)!;
            if (!Directory.Exists(dir)) throw new TianGongException($"--tokenizer: '{dir}' is not a folder");
            var template = (TokenizerLoader.Load(dir) ?? throw new TianGongException($"{dir}: no tokenizer"))
                .ChatTemplate ?? throw new TianGongException($"{dir}: this tokenizer's model does not chat (no chat template)");
            var (messageList, tools) = ReadConversation(parse.GetValue(messages)!);
            var stdout = Console.OpenStandardOutput();
            var bytes = Encoding.UTF8.GetBytes(template.Render(messageList, tools, parse.GetValue(generation)));
            stdout.Write(bytes);
            stdout.Flush();
            return 0;
        }));
        return command;
    }

    private static (JsonArray Messages, JsonArray? Tools) ReadConversation(string path)
    {
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(File.Exists(path) ? File.ReadAllText(path) : throw new TianGongException($"--messages: '{path}' does not exist"));
        }
        catch (JsonException e)
        {
            throw new TianGongException($"{path}: not valid JSON ({e.Message})", e);
        }
        return root switch
        {
            JsonArray array => (array, null),
            JsonObject o when o["messages"] is JsonArray m => (m, o["tools"] switch
            {
                null => null,
                JsonArray t => t,
                _ => throw new TianGongException($"{path}: `tools` is not an array"),
            }),
            _ => throw new TianGongException($"{path}: expected {{\"messages\": [...], \"tools\": [...]}} or an array of messages"),
        };
    }
}
