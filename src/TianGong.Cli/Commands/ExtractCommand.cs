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
        var headsKeep = new Option<double?>("--heads-keep") { Description = "Fraction of attention heads each layer keeps (GQA: of each key/value group's query heads), ranked by importance on --calibration" };
        var mlpKeep = new Option<double?>("--mlp-keep") { Description = "Fraction of MLP channels each layer keeps, ranked by importance on --calibration" };
        var calibration = new Option<string?>("--calibration") { Description = "Text file that head and channel importance (first-order Taylor) is measured on" };
        var output = new Option<string>("--out") { Description = "Folder to write", Required = true };
        var command = new Command("extract", "Extract a smaller model: keep some of a model's layers, prune heads and MLP channels")
            { model, layers, keep, headsKeep, mlpKeep, calibration, output };
        command.SetAction(parse => CliRunner.Run(() =>
        {
            var source = parse.GetValue(model)!;
            var config = ConfigJson.ReadFile(FolderFiles.Require(source, ModelFolder.ConfigFile, source, "config.json"));
            int total = LayerExtraction.LayerCount(config, source);
            var pruning = new PruningOptions(parse.GetValue(headsKeep), parse.GetValue(mlpKeep), parse.GetValue(calibration));
            var chosen = (parse.GetValue(layers), parse.GetValue(keep)) switch
            {
                ({ } list, null) => LayerExtraction.ParseLayers(list),
                (null, { } n) => LayerExtraction.Evenly(total, n),
                (null, null) when pruning.PrunesAnything => Enumerable.Range(0, total).ToList(),
                _ => throw new TianGongException("extract: give exactly one of --layers and --keep-layers (or neither, with --heads-keep/--mlp-keep)"),
            };
            var target = parse.GetValue(output)!;
            var plan = LayerExtraction.Extract(source, target, chosen, pruning);
            using var check = ModelFolder.Load(target);
            AnsiConsole.MarkupLineInterpolated($"kept layers {string.Join(",", chosen)} of {total} in [bold]{target}[/]");
            if (plan is not null)
                AnsiConsole.MarkupLineInterpolated($"pruned to {plan.HeadsKept} attention heads ({plan.KvHeadsKept} key/value) and {plan.ChannelsKept} MLP channels per layer");
            return 0;
        }));
        return command;
    }
}
