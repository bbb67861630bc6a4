using System.CommandLine;
using TianGong.Inference.Serving;
using TianGong.Server;

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
        var prefillChunk = new Option<int>("--prefill-chunk") { Description = "Most prompt tokens prefilled between two decode steps (longer prompts are prefilled in chunks)", DefaultValueFactory = _ => 512 };
        var command = new Command("serve", "Serve a model over an OpenAI-compatible HTTP API with continuous batching")
            { model, host, port, apiKey, maxBatch, maxContext, maxQueue, prefillChunk };
        var loading = ModelLoadingOptions.AddTo(command);
        command.SetAction(parse => CliRunner.Run(() =>
        {
            var options = new ServerOptions(parse.GetValue(model)!, parse.GetValue(host)!, parse.GetValue(port), parse.GetValue(apiKey),
                new ServingOptions(parse.GetValue(maxBatch), parse.GetValue(maxContext), parse.GetValue(maxQueue), parse.GetValue(prefillChunk)));
            options.Serving!.Validate();
            if (!Directory.Exists(options.ModelDirectory)) throw new TianGongException($"{options.ModelDirectory}: model folder not found");
            loading.Check(parse); // a bad --device or --dtype fails now, not in the background load
            if (TianGongServer.ExposedWithoutKey(options) is { } warning) Console.Error.WriteLine(warning);
            using var app = TianGongServer.Build(options, () => loading.Load(parse, options.ModelDirectory));
            Console.Error.WriteLine($"serving {options.Name} on http://{options.Host}:{options.Port} (Ctrl+C stops after in-flight requests finish)");
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
}
