using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using TianGong.Checkpoints;
using TianGong.Inference.Serving;
using TianGong.Models;
using TianGong.Server;
using TianGong.Tokenizers;

namespace TianGong.Tests.Serving;

/// <summary>A tiny random GPT-2 with a small trained tokenizer in a temp model folder, served on a loopback port.</summary>
internal sealed class TestServer : IAsyncDisposable
{
    public static readonly string[] Poems =
    [
        "春眠不覺曉，處處聞啼鳥。\n夜來風雨聲，花落知多少。",
        "床前明月光，疑是地上霜。\n舉頭望明月，低頭思故鄉。",
        "白日依山盡，黃河入海流。\n欲窮千里目，更上一層樓。",
        "hello world, the quick brown fox jumps over the lazy dog.\n",
    ];

    private static readonly Lazy<ByteLevelBpeTokenizer> Tokenizer = new(() =>
        ByteLevelBpeTrainer.Train(Enumerable.Repeat(Poems, 20).SelectMany(p => p), new BpeTrainerOptions(VocabSize: 400, MinFrequency: 2)));

    private static readonly Lazy<string> Folder = new(() =>
    {
        var tokenizer = Tokenizer.Value;
        manual_seed(5);
        var config = TestModels.Gpt2(tokenizer.VocabSize) with { NPositions = 512, BosTokenId = tokenizer.BosId, EosTokenId = tokenizer.EosId };
        using var model = ModelConfigs.CreateCausalLM(config);
        model.InitializeWeights();
        var dir = Path.Combine(TestModels.TempDir(), "tiny-poet");
        ModelFolder.Save(dir, model, config, tokenizer);
        return dir;
    });

    /// <summary>
    /// The same tokenizer and name with a 4×512 GPT-2: a decode step of milliseconds, not the tiny model's ~0.5 ms, for
    /// tests that need a sequence still decoding while they act (the tiny model finishes 490 tokens in about 0.3 s).
    /// </summary>
    private static readonly Lazy<string> SlowFolder = new(() =>
    {
        var tokenizer = Tokenizer.Value;
        manual_seed(6);
        var config = TestModels.Gpt2(tokenizer.VocabSize) with
        {
            NPositions = 2048, NEmbd = 512, NLayer = 4, NHead = 8, BosTokenId = tokenizer.BosId, EosTokenId = tokenizer.EosId,
        };
        using var model = ModelConfigs.CreateCausalLM(config);
        model.InitializeWeights();
        var dir = Path.Combine(TestModels.TempDir(), "tiny-poet");
        ModelFolder.Save(dir, model, config, tokenizer);
        return dir;
    });

    /// <summary>A server of the 4×512 model (<see cref="SlowFolder"/>), under the same model name, ready.</summary>
    public static async Task<TestServer> StartSlow(ServingOptions serving)
    {
        var server = await Start(serving, load: () => ModelFolder.Load(SlowFolder.Value));
        await server.WaitReady();
        return server;
    }

    private readonly WebApplication app;

    private TestServer(WebApplication app, HttpClient client) => (this.app, Client) = (app, client);

    public HttpClient Client { get; }

    public ModelHost Host => app.Services.GetRequiredService<ModelHost>();

    public static async Task<TestServer> Start(ServingOptions? serving = null, string? apiKey = null, Func<LoadedModel>? load = null, long maxBody = 1 << 20)
    {
        var options = new ServerOptions(Folder.Value, Port: 0, ApiKey: apiKey, Serving: serving ?? new ServingOptions(MaxBatch: 8), MaxBodyBytes: maxBody);
        var app = TianGongServer.Build(options, load);
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        var server = new TestServer(app, new HttpClient { BaseAddress = new Uri(address), Timeout = TimeSpan.FromSeconds(60) });
        if (load is null) await server.WaitReady();
        return server;
    }

    public static LoadedModel LoadFolder() => ModelFolder.Load(Folder.Value);

    public async Task WaitReady()
    {
        for (int i = 0; i < 600 && !Host.IsReady; i++) await Task.Delay(50);
        Assert.True(Host.IsReady, Host.LoadError ?? "the model did not load in 30 s");
    }

    public async Task<(int Status, JsonObject Body)> Post(string path, object body)
    {
        using var response = await Client.PostAsJsonAsync(path, body);
        return ((int)response.StatusCode, JsonNode.Parse(await response.Content.ReadAsStringAsync())!.AsObject());
    }

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await app.StopAsync();
        await app.DisposeAsync();
    }
}
