using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using TianGong.Inference.Serving;
using TianGong.Models;
using TianGong.Models.Layers;
using TianGong.Server;
using TianGong.Tests.Training;
using TianGong.Tuning;

namespace TianGong.Tests.Serving;

/// <summary>Several LoRA adapters over one base, batched together: each row computes as its adapter merged into the base.</summary>
[Collection(nameof(GlobalRandomState))]
public class MultiAdapterTests
{
    private static readonly string[] Names = ["poet-a", "poet-b", "poet-c"];

    /// <summary>
    /// An adapter folder for the model <paramref name="create"/> makes, with random non-zero B (a fresh adapter has B = 0
    /// and would change nothing), so that each adapter moves the model its own way.
    /// </summary>
    private static string MakeAdapter(Func<CausalLM> create, string targets, int rank, long seed)
    {
        using var model = create();
        manual_seed(seed);
        var config = new LoraConfig(rank, 2.0 * rank, LayerSelector.Parse(targets), UseRsLora: rank == 3);
        LoraAdapter.Inject(model, config);
        using (no_grad())
            foreach (var (_, layer) in LoraAdapter.Layers(model)) layer.B.normal_(0, 0.5);
        var dir = TestModels.TempDir();
        LoraAdapter.Save(model, config, dir);
        return dir;
    }

    // Different targets and ranks per adapter, so a layer is changed by some adapters and left alone by others.
    private static List<NamedAdapter> ThreeAdapters(string family, Func<CausalLM> create)
    {
        string[] targets = family == "gpt2" ? ["c_attn", "all-linear", "c_fc,c_proj"] : ["q_proj,v_proj", "all-linear", "o_proj,down_proj"];
        return [.. targets.Select((t, i) => new NamedAdapter(Names[i], MakeAdapter(create, t, rank: i + 1, seed: 10 + i)))];
    }

    private static CausalLM TestServerModel()
    {
        var loaded = TestServer.LoadFolder();
        return loaded.AsCausalLM("test");
    }

    [Theory]
    [InlineData("gpt2", MultiLoraStrategy.Grouped)]
    [InlineData("gpt2", MultiLoraStrategy.Stacked)]
    [InlineData("llama", MultiLoraStrategy.Grouped)]
    [InlineData("llama", MultiLoraStrategy.Stacked)]
    public void A_mixed_batch_gives_each_row_the_logits_of_its_adapter_merged_into_the_base(string family, MultiLoraStrategy strategy)
    {
        var adapters = ThreeAdapters(family, () => TestModels.Create(family));
        using var model = TestModels.Create(family);
        model.eval();
        var set = MultiLoraAdapters.Load(model, adapters, "tiny", strategy);
        Assert.Equal(Names, set.Names);
        Assert.Equal(strategy == MultiLoraStrategy.Stacked, set.Stacked);
        string?[] rows = ["poet-b", null, "poet-a", "poet-c", "poet-a"];
        manual_seed(1);
        using var ids = randint(0, 64, [rows.Length, 9], dtype: ScalarType.Int64);
        using var _ = no_grad();
        Tensor mixed;
        using (set.Route(rows)) mixed = model.forward(ids);                                          // (5, 9, V)
        using var unrouted = model.forward(ids);

        using var plain = TestModels.Create(family);
        plain.eval();
        using var baseLogits = plain.forward(ids);
        Assert.Equal(plain.state_dict().Keys, model.state_dict().Keys); // the adapters add no keys: the base saves as before
        Assert.True(unrouted.eq(baseLogits).all().item<bool>(), "outside a route every layer must compute the base exactly");
        for (int i = 0; i < rows.Length; i++)
        {
            using var reference = TestModels.Create(family);
            reference.eval();
            if (rows[i] is { } name)
            {
                LoraAdapter.Load(reference, adapters.Single(a => a.Name == name).Directory);
                LoraAdapter.Merge(reference);
            }
            using var expected = reference.forward(ids[i..(i + 1)]);
            double diff = (mixed[i..(i + 1)] - expected).abs().max().item<float>();
            Assert.True(diff < 1e-5, $"row {i} ({rows[i] ?? "base"}) differs from its merged model by {diff}");
            double moved = (mixed[i] - baseLogits[i]).abs().max().item<float>();
            Assert.True(rows[i] is null ? moved == 0 : moved > 1e-2, $"row {i} ({rows[i] ?? "base"}) moved {moved} from the base");
        }
    }

    [Theory]
    [InlineData(MultiLoraStrategy.Grouped)]
    [InlineData(MultiLoraStrategy.Stacked)]
    public async Task Each_request_decodes_the_same_alone_and_batched_with_requests_for_other_adapters_and_the_base(MultiLoraStrategy strategy)
    {
        var adapters = ThreeAdapters("gpt2", TestServerModel);
        using var loaded = TestServer.LoadFolder();
        var model = loaded.AsCausalLM("test");
        var tokenizer = loaded.Tokenizer!;
        var set = MultiLoraAdapters.Load(model, adapters, "tiny-poet", strategy);
        string[] texts = ["床前", "春眠不覺曉，處處", "白日依山盡", "夜來風雨聲，花落知", "舉頭望明月", "千山", "黃河入海流", "孤舟"];
        string?[] adapterOf = ["poet-a", "poet-b", null, "poet-c", "poet-c", "poet-a", null, "poet-b"];
        // Greedy and seeded sampling alternate; lengths differ, so rows finish at different steps and later ones move in.
        var requests = texts.Select((text, i) => new CompletionRequest(tokenizer.Encode(text), 6 + 2 * (i % 4),
            Temperature: i % 2 == 0 ? 0 : 1.0, Seed: i, IgnoreEos: true, Adapter: adapterOf[i])).ToArray();

        using var engine = new ServingEngine(model, tokenizer, new ServingOptions(MaxBatch: 4), adapters: set);
        var alone = new List<int[]>();
        foreach (var r in requests) alone.Add(await Collect(engine.Submit(r)));
        var together = await Task.WhenAll(engine.SubmitAll(requests).Select(Collect));
        for (int i = 0; i < requests.Length; i++)
            Assert.True(alone[i].SequenceEqual(together[i]), $"request {i} ({adapterOf[i] ?? "base"}): [{string.Join(",", alone[i])}] alone, [{string.Join(",", together[i])}] batched");

        // The adapter matters: the same greedy request on the base (or another adapter) decodes differently.
        var onBase = await Collect(engine.Submit(requests[0] with { Adapter = null }));
        var onC = await Collect(engine.Submit(requests[0] with { Adapter = "poet-c" }));
        Assert.NotEqual(alone[0], onBase);
        Assert.NotEqual(alone[0], onC);

        // And it decodes as the adapter merged into the base, through prefill and cached decode steps.
        using var merged = TestServer.LoadFolder();
        var mergedModel = merged.AsCausalLM("test");
        LoraAdapter.Load(mergedModel, adapters[0].Directory);
        LoraAdapter.Merge(mergedModel);
        using var single = new ServingEngine(mergedModel, tokenizer, new ServingOptions(MaxBatch: 4));
        Assert.Equal(alone[0], await Collect(single.Submit(requests[0] with { Adapter = null })));
    }

    [Fact]
    public async Task An_engine_refuses_an_adapter_it_does_not_have()
    {
        using var loaded = TestServer.LoadFolder();
        using var engine = new ServingEngine(loaded.AsCausalLM("test"), loaded.Tokenizer!, new ServingOptions(MaxBatch: 2));
        var error = Assert.Throws<TianGongException>(() => engine.Submit(new CompletionRequest([1, 2], 4, Adapter: "nope")));
        Assert.Equal("model: no adapter named 'nope'", error.Message);
        await Task.CompletedTask;
    }

    [Fact]
    public async Task The_server_lists_base_and_adapters_routes_by_model_and_answers_404_for_an_unknown_name()
    {
        var adapters = ThreeAdapters("gpt2", TestServerModel);
        await using var server = await Start(adapters);
        var models = JsonNode.Parse(await server.Client.GetStringAsync("/v1/models"))!["data"]!.AsArray();
        Assert.Equal(["tiny-poet", .. Names], models.Select(m => m!["id"]!.GetValue<string>()));
        Assert.Equal("tiny-poet", models[1]!["parent"]!.GetValue<string>());

        var texts = new Dictionary<string, string>();
        foreach (var name in new[] { "tiny-poet", "poet-a", "poet-b" })
        {
            var (status, body) = await server.Post("/v1/completions", new { model = name, prompt = "床前", max_tokens = 8, temperature = 0, ignore_eos = true });
            Assert.Equal(200, status);
            Assert.Equal(name, body["model"]!.GetValue<string>());
            texts[name] = body["choices"]![0]!["text"]!.GetValue<string>();
        }
        Assert.Equal(3, texts.Values.Distinct().Count());

        var (missing, error) = await server.Post("/v1/chat/completions", new { model = "poet-z", messages = new[] { new { role = "user", content = "hi" } } });
        Assert.Equal(404, missing);
        Assert.Equal("model_not_found", error["error"]!["code"]!.GetValue<string>());
        Assert.Equal("invalid_request_error", error["error"]!["type"]!.GetValue<string>());
        Assert.Equal("model", error["error"]!["param"]!.GetValue<string>());
        Assert.Contains("'poet-z' does not exist", error["error"]!["message"]!.GetValue<string>());
        var (embedding, _) = await server.Post("/v1/embeddings", new { model = "poet-a", input = "床前" });
        Assert.Equal(400, embedding);
    }

    [Fact]
    public async Task An_adapter_made_for_another_base_fails_the_load_naming_adapter_and_base()
    {
        // Same family, narrower model: every A and B has the wrong width.
        var narrow = MakeAdapter(() => { manual_seed(3); return ModelConfigs.CreateCausalLM(TestModels.Gpt2(400) with { NEmbd = 16 }); }, "c_attn", 2, 1);
        // Another family: its target modules name no layer of GPT-2.
        var llama = MakeAdapter(() => TestModels.Create("llama"), "q_proj,v_proj", 2, 2);
        using (var loaded = TestServer.LoadFolder())
        {
            var model = loaded.AsCausalLM("test");
            var shape = Assert.Throws<TianGongException>(() => MultiLoraAdapters.Load(model, [new("ok", MakeAdapter(TestServerModel, "c_attn", 2, 4)), new("narrow", narrow)], "tiny-poet"));
            Assert.StartsWith($"adapter 'narrow' ({narrow}) does not fit the base model 'tiny-poet': 'base_model.model.transformer.h.0.attn.c_attn.lora_A.weight' has shape [2, 16] but the base's transformer.h.0.attn.c_attn needs [2, 32]", shape.Message);
            var targets = Assert.Throws<TianGongException>(() => MultiLoraAdapters.Load(model, [new("llama", llama)], "tiny-poet"));
            Assert.StartsWith($"adapter 'llama' ({llama}) does not fit the base model 'tiny-poet': its target modules 'q_proj,v_proj' match none of the base's linear layers (transformer.h.0.attn.c_attn", targets.Message);
        }

        await using var server = await Start([new NamedAdapter("narrow", narrow)], waitReady: false);
        for (int i = 0; i < 600 && server.Host.LoadError is null; i++) await Task.Delay(50);
        Assert.Contains("adapter 'narrow'", server.Host.LoadError);
        Assert.Contains("base model 'tiny-poet'", server.Host.LoadError);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await server.Client.GetAsync("/health")).StatusCode);
    }

    [Theory]
    [InlineData("poet=/models/poet", "poet", "/models/poet")]
    [InlineData("a.b-c:1 = dir", "a.b-c:1", "dir")]
    [InlineData("/models/poet", null, null)]
    [InlineData("out/run=3", null, null)]
    public void Adapter_values_are_name_equals_folder_or_a_bare_folder(string text, string? name, string? dir)
    {
        var parsed = NamedAdapter.Parse(text);
        Assert.Equal(name, parsed?.Name);
        Assert.Equal(dir, parsed?.Directory);
    }

    [Fact]
    public void A_malformed_adapter_name_is_refused()
    {
        Assert.Equal("--adapter: adapter name 'a b' may hold only letters, digits and . _ - :", Assert.Throws<TianGongException>(() => NamedAdapter.Parse("a b=dir")).Message);
        Assert.Equal("--adapter: '=dir' must be NAME=DIR with both parts given", Assert.Throws<TianGongException>(() => NamedAdapter.Parse("=dir")).Message);
    }

    [Fact]
    public void Serve_refuses_a_bare_adapter_mixed_with_named_ones_and_a_folder_that_is_no_adapter()
    {
        string folder;
        using (var loaded = TestServer.LoadFolder()) folder = loaded.Directory;
        var adapter = MakeAdapter(TestServerModel, "c_attn", 2, 5);
        var mixed = Cli.CliProcess.Run(TestModels.TempDir(), "serve", "--model", folder, "--port", "0", "--adapter", $"a={adapter}", "--adapter", adapter);
        Assert.NotEqual(0, mixed.ExitCode);
        Assert.Contains("--adapter: give one bare DIR (applied to the served model) or any number of NAME=DIR adapters served beside it, not both", mixed.Stderr);
        var notAdapter = Cli.CliProcess.Run(TestModels.TempDir(), "serve", "--model", folder, "--port", "0", "--adapter", $"a={folder}");
        Assert.NotEqual(0, notAdapter.ExitCode);
        Assert.Contains($"--adapter: {folder}: no adapter_config.json; not an adapter folder", notAdapter.Stderr);
    }

    private static async Task<int[]> Collect(ChannelReader<CompletionChunk> reader)
    {
        var ids = new List<int>();
        await foreach (var chunk in reader.ReadAllAsync()) ids.AddRange(chunk.Tokens.Select(t => t.TokenId));
        return [.. ids];
    }

    private static async Task<Server> Start(IReadOnlyList<NamedAdapter> adapters, bool waitReady = true)
    {
        string folder;
        using (var loaded = TestServer.LoadFolder()) folder = loaded.Directory;
        var app = TianGongServer.Build(new ServerOptions(folder, Port: 0, Serving: new ServingOptions(MaxBatch: 4), Adapters: adapters));
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        var server = new Server(app, new HttpClient { BaseAddress = new Uri(address), Timeout = TimeSpan.FromSeconds(60) });
        if (waitReady)
        {
            for (int i = 0; i < 600 && !server.Host.IsReady && server.Host.LoadError is null; i++) await Task.Delay(50);
            Assert.True(server.Host.IsReady, server.Host.LoadError ?? "the model did not load in 30 s");
        }
        return server;
    }

    private sealed class Server(Microsoft.AspNetCore.Builder.WebApplication app, HttpClient client) : IAsyncDisposable
    {
        public HttpClient Client => client;

        public ModelHost Host => app.Services.GetRequiredService<ModelHost>();

        public async Task<(int Status, JsonObject Body)> Post(string path, object body)
        {
            using var response = await Client.PostAsJsonAsync(path, body);
            return ((int)response.StatusCode, JsonNode.Parse(await response.Content.ReadAsStringAsync())!.AsObject());
        }

        public async ValueTask DisposeAsync()
        {
            client.Dispose();
            await app.StopAsync();
            await app.DisposeAsync();
        }
    }
}
