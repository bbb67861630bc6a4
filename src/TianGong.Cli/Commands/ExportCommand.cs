using System.CommandLine;
using Spectre.Console;
using TianGong.Checkpoints;
using TianGong.Export.Gguf;
using static TorchSharp.torch;

namespace TianGong.Cli.Commands;

/// <summary><c>tiangong export gguf</c>: a model folder as one GGUF file for llama.cpp and Ollama.</summary>
internal static class ExportCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model folder (llama, mistral or qwen2, with tokenizer.json)", Required = true };
        var output = new Option<string>("--out") { Description = "GGUF file to write", Required = true };
        var type = new Option<string>("--type") { Description = "Weight type: f16, q8_0 or q4_0 (f32 also)", DefaultValueFactory = _ => "f16" };
        var gguf = new Command("gguf", "Write a llama.cpp / Ollama GGUF file with the tokenizer embedded") { model, output, type };
        gguf.SetAction(parse => CliRunner.Run(() =>
        {
            var ggmlType = GgufExporter.ParseType(parse.GetValue(type)!);
            var target = parse.GetValue(output)!;
            using var loaded = ModelFolder.Load(parse.GetValue(model)!, ScalarType.Float32);
            GgufExporter.Export(loaded, target, ggmlType);
            var written = GgufReader.Open(target);
            AnsiConsole.MarkupLineInterpolated($"wrote [bold]{target}[/]: {written.Tensors.Count} tensors ({parse.GetValue(type)}), {new FileInfo(target).Length / 1e6:F1} MB");
            return 0;
        }));
        return new Command("export", "Export a model to another runtime's format") { gguf };
    }
}
