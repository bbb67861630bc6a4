using System.CommandLine;
using Spectre.Console;
using TianGong.Checkpoints;
using TianGong.Models;
using TianGong.Tuning;

namespace TianGong.Cli.Commands;

/// <summary>
/// <c>tiangong merge</c>: folds a LoRA adapter (ours or PEFT's) into its base model and writes a plain model folder,
/// as PEFT's merge_and_unload + save_pretrained: transformers then loads it without PEFT.
/// </summary>
internal static class MergeCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Base model folder (Hugging Face layout)", Required = true };
        var adapter = new Option<string>("--adapter") { Description = "LoRA adapter folder (adapter_config.json + adapter_model.safetensors)", Required = true };
        var output = new Option<string>("--out") { Description = "Folder to write the merged model to", Required = true };
        var command = new Command("merge", "Fold a LoRA adapter into its base model and write a plain model folder") { model, adapter, output };
        command.SetAction(parse => CliRunner.Run(() =>
        {
            var source = parse.GetValue(model)!;
            var target = parse.GetValue(output)!;
            if (Path.GetFullPath(source).TrimEnd('/') == Path.GetFullPath(target).TrimEnd('/'))
                throw new TianGongException($"{target}: the output folder must differ from the base model folder");
            using var loaded = ModelFolder.Load(source);
            LoraAdapter.Load(loaded.Module, parse.GetValue(adapter)!);
            var merged = LoraAdapter.Merge(loaded.Module);
            AdapterFolder.SavePlainModel(source, target, loaded.Module, loaded.Config);
            AnsiConsole.MarkupLineInterpolated($"merged {merged.Count} LoRA layers into [bold]{target}[/]");
            return 0;
        }));
        return command;
    }
}
