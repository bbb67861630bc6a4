using System.CommandLine;
using Spectre.Console;
using TianGong.Checkpoints;
using static TorchSharp.torch;

namespace TianGong.Cli.Commands;

internal static class ConvertCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model folder to read (Hugging Face layout)", Required = true };
        var output = new Option<string>("--out") { Description = "Folder to write", Required = true };
        var dtype = new Option<string?>("--dtype") { Description = "float32, bfloat16 or float16 (default: the dtype config.json declares, else the weights' own)" };
        var maxShard = new Option<string>("--max-shard-size") { Description = "Largest weight file, e.g. 5GB or 500MiB", DefaultValueFactory = _ => "5GB" };
        var command = new Command("convert", "Re-save a model folder canonically: config.json, (sharded) safetensors, tokenizer and generation config")
            { model, output, dtype, maxShard };
        command.SetAction(parse => CliRunner.Run(() =>
        {
            var source = parse.GetValue(model)!;
            var target = parse.GetValue(output)!;
            long limit = ShardedSafeTensors.ParseSize(parse.GetValue(maxShard)!);
            if (!Directory.Exists(source)) throw new TianGongException($"{source}: model folder not found");
            ScalarType? type = parse.GetValue(dtype) is { } name ? ModelFolder.ParseDType(name, "--dtype") : null;
            var written = ModelFolder.Convert(source, target, type, limit);
            AnsiConsole.MarkupLineInterpolated($"wrote [bold]{target}[/]: {string.Join(", ", written)}");
            return 0;
        }));
        return command;
    }
}
