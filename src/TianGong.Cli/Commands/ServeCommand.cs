using System.CommandLine;
using TianGong.Inference.Serving;
using TianGong.Server;
using TianGong.Tuning;

namespace TianGong.Cli.Commands;

internal static class ServeCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model folder (config.json, model.safetensors, tokenizer.json)", Required = true };
        var host = new Option<string>("--host") { Description = "Address to bind (loopback unless you mean to expose it)", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "TCP port", DefaultValueFactory = _ => 8080 };
        var apiKey = new Option<string?>("--api-key") { Description = "Require 'Authorization: Bearer KEY' on /v1 routes" };
        var maxBatch = new Option<int>("--max-batch") { Description = "Most sequences decoded in one forward pass", DefaultValueFactory = _ => 8 };
        var maxContext = new Option<int>("--max-context") { Description = "Most tokens (prompt + completion) per sequence; 0: the model's context", DefaultValueFactory = _ => 0 };
        var maxQueue = new Option<int>("--max-queue") { Description = "Most requests waiting for a slot before answering 429", DefaultValueFactory = _ => 64 };
        var adapter = new Option<string[]>("--adapter")
        {
            Description = "NAME=DIR: a LoRA adapter served as model NAME beside the base, batched with it (repeat for more); "
                + "a bare DIR applies one adapter (LoRA or prompt tuning) to the served model itself",
        };
        var prefillChunk = new Option<int>("--prefill-chunk") { Description = "Most prompt tokens prefilled between two decode steps (longer prompts are prefilled in chunks)", DefaultValueFactory = _ => 512 };
        var command = new Command("serve", "Serve a model over an OpenAI-compatible HTTP API with continuous batching")
            { model, host, port, apiKey, maxBatch, maxContext, maxQueue, prefillChunk, adapter };
        var loading = ModelLoadingOptions.AddTo(command, adapter: false, streaming: true);
        command.SetAction(parse => CliRunner.Run(() =>
        {
            var (bare, named) = Adapters(parse.GetValue(adapter) ?? []);
            if (named.Count > 0 && parse.GetValue(loading.MaxMemory!) is not null)
                throw new TianGongException("--max-memory: cannot be combined with --adapter NAME=DIR (streamed layers are not wrapped by adapters)");
            var options = new ServerOptions(parse.GetValue(model)!, parse.GetValue(host)!, parse.GetValue(port), parse.GetValue(apiKey),
                new ServingOptions(parse.GetValue(maxBatch), parse.GetValue(maxContext), parse.GetValue(maxQueue), parse.GetValue(prefillChunk)), Adapters: named);
            options.Serving!.Validate();
            if (!Directory.Exists(options.ModelDirectory)) throw new TianGongException($"{options.ModelDirectory}: model folder not found");
            loading.Check(parse, bare); // a bad --device or --dtype fails now, not in the background load
            if (TianGongServer.ExposedWithoutKey(options) is { } warning) Console.Error.WriteLine(warning);
            using var app = TianGongServer.Build(options, () => loading.Load(parse, options.ModelDirectory, bare));
            Console.Error.WriteLine($"serving {string.Join(", ", [options.Name, .. named.Select(a => a.Name)])} on http://{options.Host}:{options.Port} (Ctrl+C stops after in-flight requests finish)");
            try
            {
                app.Run();
            }
            catch (IOException e) when (e.InnerException is Microsoft.AspNetCore.Connections.AddressInUseException)
            {
                throw new TianGongException($"--port: cannot listen on {options.Host}:{options.Port}, the address is already in use");
            }
            return 0;
        }));
        return command;
    }

    /// <summary>
    /// The --adapter values: one bare DIR (its old meaning: applied to the served model), or NAME=DIR adapters served
    /// beside the base; the folders are checked now, their fit to the model when it loads.
    /// </summary>
    private static (string? Bare, IReadOnlyList<NamedAdapter> Named) Adapters(string[] values)
    {
        var named = values.Select(NamedAdapter.Parse).OfType<NamedAdapter>().ToList();
        var bare = values.Where(v => NamedAdapter.Parse(v) is null).ToList();
        if (bare.Count > 0 && (bare.Count > 1 || named.Count > 0))
            throw new TianGongException("--adapter: give one bare DIR (applied to the served model) or any number of NAME=DIR adapters served beside it, not both");
        foreach (var dir in bare.Concat(named.Select(a => a.Directory)))
            if (!File.Exists(Path.Combine(dir, LoraConfig.FileName)))
                throw new TianGongException($"--adapter: {dir}: no {LoraConfig.FileName}; not an adapter folder");
        return (bare.SingleOrDefault(), named);
    }
}
