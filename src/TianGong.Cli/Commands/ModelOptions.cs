using System.CommandLine;
using System.Text.RegularExpressions;
using TianGong.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace TianGong.Cli.Commands;

internal static partial class ModelOptions
{
    public static Tokenizers.ITextTokenizer RequireTokenizer(LoadedModel m, string instead) =>
        m.Tokenizer ?? throw new TianGongException($"{m.Directory}: no tokenizer ({ModelFolder.TokenizerFile}, vocab.json + merges.txt or tokenizer.model); pass {instead} instead");

    /// <summary>`--device cpu|cuda|cuda:N`, for every command that runs a model.</summary>
    public static Option<string> DeviceOption() =>
        new("--device") { Description = "Where the model runs: cpu, cuda (the first GPU) or cuda:N", DefaultValueFactory = _ => "cpu" };

    /// <summary>The torch device a --device value names; fails with one line for a malformed value or a GPU this process cannot use.</summary>
    public static Device ParseDevice(string text)
    {
        var match = DevicePattern().Match(text.Trim());
        if (!match.Success)
            throw new TianGongException($"--device: '{text}' is not a device (expected cpu, cuda or cuda:N)");
        if (match.Groups["kind"].Value == "cpu") return CPU;
        int index = match.Groups["index"].Success ? int.Parse(match.Groups["index"].Value) : 0;
        if (!cuda.is_available())
            throw new TianGongException($"--device {text}: CUDA is not available (no GPU, or a CPU-only build of libtorch); use --device cpu");
        int count = cuda.device_count();
        if (index >= count)
            throw new TianGongException($"--device {text}: there {(count == 1 ? "is 1 CUDA device" : $"are {count} CUDA devices")} (cuda:0{(count > 1 ? $" to cuda:{count - 1}" : "")})");
        return new Device(DeviceType.CUDA, index);
    }

    /// <summary>
    /// Loads a model folder onto <paramref name="deviceText"/>, in <paramref name="dtypeText"/> (default: the folder's own
    /// dtype): both are checked first, so a bad value costs no loading.
    /// </summary>
    public static LoadedModel Load(string dir, string? deviceText, string? dtypeText = null)
    {
        var device = ParseDevice(deviceText ?? "cpu");
        ScalarType? dtype = dtypeText is null ? null : ModelFolder.ParseDType(dtypeText, "--dtype");
        var loaded = ModelFolder.Load(dir, dtype);
        if (device.type != DeviceType.CPU) loaded.Module.to(device);
        return loaded;
    }

    /// <summary>`--adapter DIR`, added to <paramref name="command"/>: every model-taking command reads adapters the same way.</summary>
    public static Option<string?> AdapterOption(Command command)
    {
        var option = new Option<string?>("--adapter") { Description = "Adapter folder to apply (PEFT layout: LoRA or prompt tuning, from finetune or PEFT)" };
        command.Options.Add(option);
        return option;
    }

    /// <summary>As <see cref="Load(string, string?, string?)"/>, then the adapter of <paramref name="adapterDir"/> applied when given.</summary>
    public static LoadedModel Load(string dir, string? deviceText, string? dtypeText, string? adapterDir)
    {
        var loaded = Load(dir, deviceText, dtypeText);
        if (adapterDir is null) return loaded;
        try
        {
            return Tuning.AdapterFolder.Apply(loaded, adapterDir);
        }
        catch
        {
            loaded.Dispose();
            throw;
        }
    }

    [GeneratedRegex(@"^(?<kind>cpu|cuda)(:(?<index>\d{1,3}))?$")]
    private static partial Regex DevicePattern();
}

/// <summary>
/// The options every command that runs a model folder shares — where it runs (--device), in which dtype (--dtype) and
/// with which adapter (--adapter) — added and read in one place, so the commands cannot drift apart.
/// </summary>
internal sealed record ModelLoadingOptions(Option<string> Device, Option<string?> DType, Option<string?>? Adapter, Option<string?>? MaxMemory = null)
{
    /// <param name="adapter">False where the command reads --adapter its own way (serve: several NAME=DIR).</param>
    /// <param name="streaming">Also add --max-memory (generate, score, serve): layers beyond the cap are streamed from the file.</param>
    public static ModelLoadingOptions AddTo(Command command, bool adapter = true, bool streaming = false)
    {
        var device = ModelOptions.DeviceOption();
        var dtype = new Option<string?>("--dtype") { Description = "float32, bfloat16 or float16 (default: the dtype the folder is stored in)" };
        command.Options.Add(device);
        command.Options.Add(dtype);
        Option<string?>? maxMemory = streaming ? new("--max-memory") { Description = "Weights kept in memory, e.g. 200MB or 2GiB; the last layers beyond it are streamed from the safetensors file as they run" } : null;
        if (maxMemory is not null) command.Options.Add(maxMemory);
        return new ModelLoadingOptions(device, dtype, adapter ? ModelOptions.AdapterOption(command) : null, maxMemory);
    }

    /// <summary>Fails on a bad --device, --dtype or --max-memory before anything is loaded (serve loads in the background).</summary>
    public void Check(ParseResult parse, string? adapterDir = null)
    {
        ModelOptions.ParseDevice(parse.GetValue(Device)!);
        if (parse.GetValue(DType) is { } dtype) ModelFolder.ParseDType(dtype, "--dtype");
        MaxMemoryBytes(parse, Adapter is null ? adapterDir : parse.GetValue(Adapter));
    }

    public LoadedModel Load(ParseResult parse, string dir, string? adapterDir = null)
    {
        var adapter = Adapter is null ? adapterDir : parse.GetValue(Adapter);
        if (MaxMemoryBytes(parse, adapter) is not { } cap)
            return ModelOptions.Load(dir, parse.GetValue(Device), parse.GetValue(DType), adapter);
        var dtype = parse.GetValue(DType) is { } name ? ModelFolder.ParseDType(name, "--dtype") : (ScalarType?)null;
        return Inference.Offload.OffloadedModel.Load(dir, dtype, cap);
    }

    private long? MaxMemoryBytes(ParseResult parse, string? adapter)
    {
        if (MaxMemory is null || parse.GetValue(MaxMemory) is not { } text) return null;
        long bytes = ShardedSafeTensors.ParseSize(text, "--max-memory");
        if (ModelOptions.ParseDevice(parse.GetValue(Device)!).type != DeviceType.CPU)
            throw new TianGongException("--max-memory: streams layers into CPU memory; use it with --device cpu");
        if (adapter is not null)
            throw new TianGongException("--max-memory: cannot be combined with --adapter (merge the adapter into the model first)");
        return bytes;
    }
}
