using System.Diagnostics;
using TianGong.Checkpoints;
using TianGong.Inference.Serving;
using TianGong.Models;
using TianGong.Models.Layers;
using TianGong.Tokenizers;
using TianGong.Training;
using TianGong.Tuning;
using TorchSharp;
using static TorchSharp.torch;

namespace TianGong.Bench;

/// <summary>
/// Multi-adapter serving throughput: the same streams of requests through the serving engine, (1) on the base model alone,
/// (2) all for one LoRA adapter, (3, 4) spread over 4 adapters in one batch, grouped and stacked, (5) for the base on the
/// model that holds the 4 adapters (the cost of the multi-adapter layers when no row uses them). Modes alternate round by
/// round so machine load hits them alike; the median round of each is reported with its ratio to (1).
/// </summary>
internal static class MultiLoraBench
{
    private static readonly string[] Poems =
    [
        "春眠不覺曉，處處聞啼鳥。\n夜來風雨聲，花落知多少。",
        "床前明月光，疑是地上霜。\n舉頭望明月，低頭思故鄉。",
        "白日依山盡，黃河入海流。\n欲窮千里目，更上一層樓。",
        "千山鳥飛絕，萬徑人蹤滅。\n孤舟蓑笠翁，獨釣寒江雪。",
    ];

    public static int Run(string[] args)
    {
        string configPath = args.Length > 0 ? args[0] : "configs/poetry-tiny.json";
        int rank = args.Length > 1 ? int.Parse(args[1]) : 16;
        string targets = args.Length > 2 ? args[2] : "all-linear";
        int streams = args.Length > 3 ? int.Parse(args[3]) : 16;
        int maxTokens = args.Length > 4 ? int.Parse(args[4]) : 64;
        int rounds = args.Length > 5 ? int.Parse(args[5]) : 5;

        var tokenizer = ByteLevelBpeTrainer.Train(Enumerable.Repeat(Poems, 50).SelectMany(p => p), new BpeTrainerOptions(VocabSize: 600, MinFrequency: 2));
        var config = PretrainConfig.Load(configPath).Model.WithTokenizer(tokenizer.VocabSize, tokenizer.BosId, tokenizer.EosId);
        var root = Path.Combine(Path.GetTempPath(), "tiangong-bench-multilora");
        var dir = Path.Combine(root, "base");
        manual_seed(0);
        using (var model = ModelConfigs.CreateCausalLM(config))
        {
            model.InitializeWeights();
            ModelFolder.Save(dir, model, config, tokenizer);
            Console.WriteLine($"model: {configPath} ({config.ModelType}, random weights), {model.ParameterCount() / 1e6:F2}M parameters; threads {get_num_threads()}");
        }
        var adapters = Enumerable.Range(0, 4).Select(i => new NamedAdapter($"lora-{i}", SaveAdapter(dir, Path.Combine(root, $"lora-{i}"), rank, targets, seed: i + 1))).ToList();
        Console.WriteLine($"adapters: 4 × LoRA r={rank} on {targets}; {streams} requests submitted at once (max batch {streams}), {maxTokens} new tokens each, sampled (temperature 1, seed per request), {rounds} rounds");

        using var plain = ModelFolder.Load(dir);
        using var grouped = ModelFolder.Load(dir);
        using var stacked = ModelFolder.Load(dir);
        var groupedSet = MultiLoraAdapters.Load(grouped.Module, adapters, "base", MultiLoraStrategy.Grouped);
        var stackedSet = MultiLoraAdapters.Load(stacked.Module, adapters, "base", MultiLoraStrategy.Stacked);
        Console.WriteLine($"layers with adapters: {groupedSet.Layers.Count}");
        var options = new ServingOptions(MaxBatch: streams, MaxQueue: streams);
        using var baseEngine = new ServingEngine(plain.AsCausalLM("bench"), tokenizer, options);
        using var multiEngine = new ServingEngine(grouped.AsCausalLM("bench"), tokenizer, options, adapters: groupedSet);
        using var stackedEngine = new ServingEngine(stacked.AsCausalLM("bench"), tokenizer, options, adapters: stackedSet);

        var prompts = Enumerable.Range(0, streams).Select(s => tokenizer.Encode(Poems[s % Poems.Length][..(3 + s % 5)])).ToArray();
        (string Name, ServingEngine Engine, Func<int, string?> AdapterOf)[] modes =
        [
            ("base model, no adapters loaded", baseEngine, _ => null),
            ("1 adapter (every request lora-0)", multiEngine, _ => "lora-0"),
            ("4 adapters mixed in one batch, grouped", multiEngine, s => $"lora-{s % 4}"),
            ("4 adapters mixed in one batch, stacked", stackedEngine, s => $"lora-{s % 4}"),
            ("base rows on the 4-adapter model", multiEngine, _ => null),
        ];
        var results = modes.Select(_ => new List<double>()).ToArray();
        // CPU time of this process per token as well as wall time: on a loaded machine the wall clock mostly measures
        // the wait for a core, the CPU time what the work itself costs.
        var cpuPerToken = modes.Select(_ => new List<double>()).ToArray();
        var process = Process.GetCurrentProcess();
        for (int round = 0; round < rounds; round++)
            for (int m = 0; m < modes.Length; m++)
            {
                var requests = prompts.Select((p, s) => new CompletionRequest(p, maxTokens, Temperature: 1.0, Seed: s, IgnoreEos: true, Adapter: modes[m].AdapterOf(s))).ToList();
                process.Refresh();
                var cpu = process.TotalProcessorTime;
                var clock = Stopwatch.StartNew();
                long tokens = Task.WhenAll(modes[m].Engine.SubmitAll(requests).Select(Count)).GetAwaiter().GetResult().Sum();
                results[m].Add(tokens / clock.Elapsed.TotalSeconds);
                process.Refresh();
                cpuPerToken[m].Add((process.TotalProcessorTime - cpu).TotalMilliseconds / tokens);
            }
        double Median(List<double> xs) => xs.Order().ElementAt(xs.Count / 2);
        double reference = Median(results[0]), referenceCpu = Median(cpuPerToken[0]);
        Console.WriteLine("mode | output tok/s, wall (median) | vs base | CPU ms per token (median) | base's CPU per token ÷ this | wall tok/s of each round");
        for (int m = 0; m < modes.Length; m++)
            Console.WriteLine($"{modes[m].Name} | {Median(results[m]):F1} | {Median(results[m]) / reference:F2}× | {Median(cpuPerToken[m]):F3} | {referenceCpu / Median(cpuPerToken[m]):F2}× | {string.Join(" / ", results[m].Select(x => x.ToString("F0")))}");
        return 0;
    }

    /// <summary>A LoRA adapter for the folder's model with random A and B (a trained adapter costs the same to apply).</summary>
    private static string SaveAdapter(string modelDir, string dir, int rank, string targets, long seed)
    {
        using var loaded = ModelFolder.Load(modelDir);
        manual_seed(seed);
        var config = new LoraConfig(rank, 2.0 * rank, LayerSelector.Parse(targets));
        LoraAdapter.Inject(loaded.Module, config);
        using (no_grad())
            foreach (var (_, layer) in LoraAdapter.Layers(loaded.Module)) layer.B.normal_(0, 0.02);
        LoraAdapter.Save(loaded.Module, config, dir);
        return dir;
    }

    private static async Task<long> Count(System.Threading.Channels.ChannelReader<CompletionChunk> reader)
    {
        long n = 0;
        await foreach (var chunk in reader.ReadAllAsync()) n += chunk.Tokens.Count;
        return n;
    }
}
