using System.CommandLine;
using Spectre.Console;
using TianGong.Checkpoints;
using TianGong.Export.Gguf;
using TianGong.Export.Onnx;
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
        return new Command("export", "Export a model to another runtime's format") { gguf, CreateOnnx() };
    }

    private static Command CreateOnnx()
    {
        var model = new Option<string>("--model") { Description = "Model folder (gpt2, llama, mistral, qwen2 or bert)", Required = true };
        var output = new Option<string>("--out") { Description = "Folder to write (model.onnx, genai_config.json, tokenizer files)", Required = true };
        var bits = new Option<int?>("--bits") { Description = "4: block linears as com.microsoft MatMulNBits int4 (block 32); default fp32" };
        var onnx = new Command("onnx", "Write an ONNX folder for ONNX Runtime and ONNX Runtime GenAI (decoders with past/present key-values)") { model, output, bits };
        onnx.SetAction(parse => CliRunner.Run(() =>
        {
            using var loaded = ModelFolder.Load(parse.GetValue(model)!, ScalarType.Float32);
            var result = OnnxExporter.Export(loaded, parse.GetValue(output)!, parse.GetValue(bits));
            long bytes = new FileInfo(result.ModelPath).Length + (result.ExternalData ? new FileInfo(result.ModelPath + ".data").Length : 0);
            AnsiConsole.MarkupLineInterpolated($"wrote [bold]{result.ModelPath}[/]{(result.ExternalData ? " (+ .data)" : "")}: {bytes / 1e6:F1} MB{(result.IsDecoder && result.GenAiSkipped is null ? ", genai_config.json" : "")}");
            if (result.GenAiSkipped is { } why) AnsiConsole.MarkupLineInterpolated($"[yellow]no genai_config.json: {why}[/]");
            return 0;
        }));
        return onnx;
    }
}
