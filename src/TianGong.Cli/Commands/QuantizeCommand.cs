using System.CommandLine;
using Spectre.Console;
using TianGong.Checkpoints;
using TianGong.Compression.Quantization;

namespace TianGong.Cli.Commands;

/// <summary>
/// <c>tiangong quantize</c>: weight-only int8 (per output channel) or int4 (group-wise) quantization of every linear
/// layer but the output head, written as a GPTQ-format folder that every model-taking command (and transformers)
/// loads.
/// </summary>
internal static class QuantizeCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model folder to quantize (Hugging Face layout)", Required = true };
        var bits = new Option<int>("--bits") { Description = "8 (per output channel) or 4 (group-wise)", Required = true };
        var groupSize = new Option<int?>("--group-size") { Description = "Inputs sharing one scale: 32, 64, 128, or -1 for one per output channel (default: 128 for 4 bits, -1 for 8)" };
        var sym = new Option<bool>("--sym") { Description = "Symmetric: zero point fixed at 2^(bits-1) (the default)" };
        var asym = new Option<bool>("--asym") { Description = "Asymmetric: a zero point per group, fitted to its range" };
        var method = new Option<string>("--method") { Description = "rtn (round to nearest) or gptq (error-compensating, needs --calibration)", DefaultValueFactory = _ => "rtn" };
        var calibration = new Option<string?>("--calibration") { Description = "UTF-8 text file whose tokens calibrate GPTQ" };
        var samples = new Option<int>("--calibration-samples") { Description = "GPTQ: at most this many 128-token windows of the calibration text", DefaultValueFactory = _ => 64 };
        var output = new Option<string>("--out") { Description = "Folder to write the quantized model to", Required = true };
        var command = new Command("quantize", "Quantize a model's linear layers to int8 or int4 (GPTQ checkpoint format)") { model, bits, groupSize, sym, asym, method, calibration, samples, output };
        command.SetAction(parse => CliRunner.Run(() =>
        {
            var source = parse.GetValue(model)!;
            var target = parse.GetValue(output)!;
            if (parse.GetValue(sym) && parse.GetValue(asym)) throw new TianGongException("--sym and --asym: give one of them");
            int b = parse.GetValue(bits);
            var config = new GptqConfig(b, parse.GetValue(groupSize) ?? (b == 4 ? 128 : -1), Sym: !parse.GetValue(asym)).Validate();
            if (Path.GetFullPath(source).TrimEnd('/') == Path.GetFullPath(target).TrimEnd('/'))
                throw new TianGongException($"{target}: the output folder must differ from the model folder");
            using var loaded = ModelFolder.Load(source);
            if (loaded.Module.modules().Any(m => m is QuantizedLinear))
                throw new TianGongException($"{source}: is already quantized (config.json has a quantization_config)");
            var names = parse.GetValue(method) switch
            {
                "rtn" => QuantizedModel.QuantizeRtn(loaded.Module, config),
                "gptq" => Gptq.Quantize(loaded.Module, config, Calibrate(loaded, parse.GetValue(calibration), parse.GetValue(samples))),
                var other => throw new TianGongException($"--method: must be rtn or gptq, got '{other}'"),
            };
            QuantizedModel.Save(target, loaded.Module, loaded.Config, config);
            ModelFolder.CopyCompanionFiles(source, target);
            AnsiConsole.MarkupLineInterpolated($"quantized {names.Count} linear layers ({parse.GetValue(method)}) to int{b} (group size {config.GroupSize}, {(config.Sym ? "symmetric" : "asymmetric")}) into [bold]{target}[/]");
            return 0;
        }));
        return command;
    }

    /// <summary>The calibration pass: the model on 128-token windows of the text, eight at a time.</summary>
    private static Action Calibrate(LoadedModel loaded, string? path, int samples)
    {
        if (path is null) throw new TianGongException("--method gptq: give --calibration FILE (text whose activations GPTQ fits)");
        if (!File.Exists(path)) throw new TianGongException($"--calibration {path}: file not found");
        var lm = loaded.AsCausalLM("quantize --method gptq");
        var tokenizer = ModelOptions.RequireTokenizer(loaded, "a model folder with a tokenizer");
        var ids = tokenizer.Encode(File.ReadAllText(path)).Select(i => (long)i).ToArray();
        const int window = 128;
        int windows = Math.Min(samples, ids.Length / window);
        if (windows < 1) throw new TianGongException($"--calibration {path}: {ids.Length} tokens, fewer than one {window}-token window");
        return () =>
        {
            for (int start = 0; start < windows; start += 8)
            {
                using var scope = TorchSharp.torch.NewDisposeScope();
                int n = Math.Min(8, windows - start);
                using var batch = TorchSharp.torch.tensor(ids.AsSpan(start * window, n * window).ToArray(), device: lm.ModelDevice).view(n, window);
                lm.forward(batch);
            }
        };
    }
}
