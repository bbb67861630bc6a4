using System.CommandLine;
using Spectre.Console;
using TianGong.Checkpoints;
using TianGong.Compression.Extraction;

namespace TianGong.Cli.Commands;

/// <summary><c>tiangong extract</c>: a shallower model made of chosen blocks of a model, as an ordinary folder.</summary>
internal static class ExtractCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model folder (llama, mistral, qwen2, gpt2 or bert)", Required = true };
        var layers = new Option<string?>("--layers") { Description = "Blocks to keep, in order, e.g. 0,2,4" };
        var keep = new Option<int?>("--keep-layers") { Description = "Keep N blocks spread evenly (first and last included)" };
        var output = new Option<string>("--out") { Description = "Folder to write", Required = true };
        var command = new Command("extract", "Extract a smaller model: keep some of a model's layers") { model, layers, keep, output };
        command.SetAction(parse => CliRunner.Run(() =>
        {
            var source = parse.GetValue(model)!;
            var config = ConfigJson.ReadFile(FolderFiles.Require(source, ModelFolder.ConfigFile, source, "config.json"));
            int total = LayerExtraction.LayerCount(config, source);
            var chosen = (parse.GetValue(layers), parse.GetValue(keep)) switch
            {
                ({ } list, null) => LayerExtraction.ParseLayers(list),
                (null, { } n) => LayerExtraction.Evenly(total, n),
                _ => throw new TianGongException("extract: give exactly one of --layers and --keep-layers"),
            };
            var target = parse.GetValue(output)!;
            LayerExtraction.Extract(source, target, chosen);
            using var check = ModelFolder.Load(target);
            AnsiConsole.MarkupLineInterpolated($"kept layers {string.Join(",", chosen)} of {total} in [bold]{target}[/]");
            return 0;
        }));
        return command;
    }
}
