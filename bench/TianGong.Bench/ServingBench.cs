using System.Diagnostics;
using System.Net.Http.Json;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using TianGong.Checkpoints;
using TianGong.Inference.Serving;
using TianGong.Models;
using TianGong.Models.Layers;
using TianGong.Server;
using TianGong.Tokenizers;
using TianGong.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace TianGong.Bench;

/// <summary>
/// Serving throughput: the model section of a pretraining config with random weights, a tokenizer trained on a few
/// poems, the real server on a loopback port, and N concurrent streaming clients. Reports aggregate output tokens/s
/// and p50/p99 time to first token (measured by the client, to the first SSE chunk), side by side with raw KV-cache decoding
/// of the same model at the same batch (a greedy loop over <c>CausalLM.forward</c>, no server, no sampling core).
/// </summary>
internal static class ServingBench
{
    private static readonly string[] Poems =
    [
        "春眠不覺曉，處處聞啼鳥。\n夜來風雨聲，花落知多少。",
        "床前明月光，疑是地上霜。\n舉頭望明月，低頭思故鄉。",
        "白日依山盡，黃河入海流。\n欲窮千里目，更上一層樓。",
        "千山鳥飛絕，萬徑人蹤滅。\n孤舟蓑笠翁，獨釣寒江雪。",
    ];

    public static int Run(string[] allArgs)
    {
        // --greedy: served requests ask for temperature 0, as raw decoding chooses; otherwise they sample at the API's default 1.
        double temperature = allArgs.Contains("--greedy") ? 0 : 1;
        // --served-only: the served levels alone (no raw decoding, CLI or decoding-core runs), for profiling the serving path.
        bool servedOnly = allArgs.Contains("--served-only");
        // --levels-only: the levels against raw decoding, without the CLI and decoding-core sections (side-by-side runs).
        bool levelsOnly = servedOnly || allArgs.Contains("--levels-only");
        var args = allArgs.Where(a => !a.StartsWith("--", StringComparison.Ordinal)).ToArray();
        string configPath = args.Length > 0 ? args[0] : "configs/poetry-small.json";
        int requestsPerStream = args.Length > 1 ? int.Parse(args[1]) : 4;
        int maxTokens = args.Length > 2 ? int.Parse(args[2]) : 64;
        int[] levels = args.Length > 3 && args[3] is not ("cache" or "engine" or "after-forward") ? [.. args[3].Split(',').Select(int.Parse)] : [1, 4, 8, 16];  // "0": the decoding core only
        var tokenizer = ByteLevelBpeTrainer.Train(Enumerable.Repeat(Poems, 50).SelectMany(p => p), new BpeTrainerOptions(VocabSize: 600, MinFrequency: 2));
        // --model-vocab=N: the model's vocabulary padded to N past the bench tokenizer's (the server rules the padding out),
        // so the LM head and sampling's V draws per token are those of a real vocabulary (poetry-small's is 16384).
        int modelVocab = allArgs.FirstOrDefault(a => a.StartsWith("--model-vocab=", StringComparison.Ordinal)) is { } vocabArg
            ? Math.Max(int.Parse(vocabArg["--model-vocab=".Length..]), tokenizer.VocabSize) : tokenizer.VocabSize;
        var config = PretrainConfig.Load(configPath).Model.WithTokenizer(modelVocab, tokenizer.BosId, tokenizer.EosId);
        var dir = Path.Combine(Path.GetTempPath(), "tiangong-bench-serving", $"vocab-{modelVocab}", "poetry-small"); // the folder name is the served model's id
        manual_seed(0);
        using (var model = ModelConfigs.CreateCausalLM(config))
        {
            model.InitializeWeights();
            ModelFolder.Save(dir, model, config, tokenizer);
            Console.WriteLine($"model: {configPath} ({config.ModelType}, random weights), {model.ParameterCount() / 1e6:F2}M parameters, vocab {tokenizer.VocabSize} (model {modelVocab}); "
                + $"threads {torch.get_num_threads()}; {maxTokens} tokens per request, {requestsPerStream} requests per stream; served requests {(temperature == 0 ? "greedy" : "sample at temperature 1")}");
        }
        Console.WriteLine($"load average at start: {ProfileBench.LoadAverage()}");
        if (args.Length > 3 && args[3] == "engine")
        {
            // Where the gap to raw decoding lies: the engine alone (requests submitted in-process, no HTTP) against the
            // server and raw decoding, alternated, best of 3 each, at 1 and 16 streams.
            foreach (int streams in new[] { 1, 16 })
            {
                double http = 0, engine = 0, raw = 0;
                for (int round = 0; round < 3; round++)
                {
                    http = Math.Max(http, RunLevel(dir, streams, requestsPerStream, maxTokens, temperature).GetAwaiter().GetResult().TokensPerSecond);
                    engine = Math.Max(engine, EngineOnly(dir, tokenizer, streams, requestsPerStream, maxTokens, temperature));
                    raw = Math.Max(raw, RawDecode(dir, tokenizer, streams, maxTokens));
                }
                Console.WriteLine($"{streams} streams: served over HTTP {http:F1} tok/s, engine alone {engine:F1} tok/s, raw decode {raw:F1} tok/s; "
                    + $"HTTP / engine {http / engine:F2}, engine / raw {engine / raw:F2} (best of 3 each)");
            }
            return 0;
        }
        if (args.Length > 3 && args[3] == "cache")
        {
            // The model side of serving alone: raw decoding with a plain cache against the engine's per-row cache, alternated.
            foreach (int batch in new[] { 1, 16 })
                for (int round = 0; round < 3; round++)
                    Console.WriteLine($"batch {batch}: raw decode {RawDecode(dir, tokenizer, batch, maxTokens):F1} tok/s, engine's per-row cache {RawDecode(dir, tokenizer, batch, maxTokens, engineCache: true):F1} tok/s");
            return 0;
        }
        if (args.Length > 3 && args[3] == "after-forward")
        {
            SamplingAfterForward(dir, tokenizer, maxTokens);
            return 0;
        }
        if (allArgs.FirstOrDefault(a => a.StartsWith("--rounds=", StringComparison.Ordinal)) is { } roundsArg)
        {
            AlternatedRounds(dir, tokenizer, levels, requestsPerStream, maxTokens, temperature, int.Parse(roundsArg["--rounds=".Length..]));
            return 0;
        }
        if (levels is [0])
        {
            DecodingCoreOverhead(tokenizer, maxTokens);
            FullVocabularySampling(maxTokens);
            return 0;
        }
        Console.WriteLine("streams | requests | output tok/s | TTFT p50 ms | TTFT p99 ms | raw decode tok/s (batch = streams) | served / raw | raw decode, engine's per-row cache, tok/s");
        var profiles = new List<string>();
        foreach (int streams in levels)
        {
            var (served, tps, profile) = RunLevel(dir, streams, requestsPerStream, maxTokens, temperature).GetAwaiter().GetResult();
            profiles.Add(profile);
            if (servedOnly)
            {
                Console.WriteLine(served);
                continue;
            }
            double raw = RawDecode(dir, tokenizer, streams, maxTokens);
            double rawEngineCache = RawDecode(dir, tokenizer, streams, maxTokens, engineCache: true);
            Console.WriteLine($"{served} | {raw,12:F1} | {tps / raw:F2} | {rawEngineCache,12:F1}");
        }
        Console.WriteLine("scheduler thread per decode step (ms) and per generated token (µs), timed part of each level:");
        Console.WriteLine("streams | steps | forward ms/step | sample µs/token | emit µs/token | prefill ms total | scheduler busy / wall | "
            + "CPU µs per token by thread (/proc: scheduler = the scheduler thread and libtorch's, pool = Kestrel, the in-process clients and continuations)");
        foreach (var p in profiles) Console.WriteLine(p);
        if (levelsOnly)
        {
            Console.WriteLine($"load average at end: {ProfileBench.LoadAverage()}");
            return 0;
        }
        // The CLI's path (TextGenerator: the shared decoding core, one sequence) against the bare loop, alternated so load drifts hit both.
        double cli = 0, bare = 0;
        for (int round = 0; round < 3; round++)
        {
            cli = Math.Max(cli, CliGenerate(dir, tokenizer, maxTokens));
            bare = Math.Max(bare, RawDecode(dir, tokenizer, 1, maxTokens));
        }
        Console.WriteLine($"CLI generate (TextGenerator, batch 1, greedy, {maxTokens} tokens): {cli:F1} tok/s; raw decode {bare:F1} tok/s; ratio {cli / bare:F2} (best of 3 each)");
        DecodingCoreOverhead(tokenizer, maxTokens);
        Console.WriteLine($"load average at end: {ProfileBench.LoadAverage()}");
        return 0;
    }

    /// <summary>
    /// What the decoding core costs per token besides the model, on random logits, the way the engine calls it: the per-row
    /// path (Step on each row, then the whole text decoded again for the stream, as before issue 12) against the batched
    /// path (StepRows over the batch, then NextText's incremental detokenization). Best of 5 alternated runs each, so
    /// the figures hold under load better than the end-to-end ones.
    /// </summary>
    private static void DecodingCoreOverhead(ITextTokenizer tokenizer, int maxTokens)
    {
        Console.WriteLine($"decoding core per token, {maxTokens} tokens per row, best of 5 (µs/token): rows | vocab | sampling | per-row Step + full decode | StepRows + NextText | ratio");
        using var _ = no_grad();
        foreach (int vocab in new[] { tokenizer.VocabSize, 16384 })
            foreach (int rows in new[] { 1, 16 })
                foreach (var (temperature, topK, topP) in Settings)
                {
                    manual_seed(1);
                    using var logits = randn(maxTokens, rows, vocab) * 4;
                    double perRow = double.MaxValue, batched = double.MaxValue;
                    for (int round = 0; round < 5; round++)
                    {
                        perRow = Math.Min(perRow, Run(batchedPath: false));
                        batched = Math.Min(batched, Run(batchedPath: true));
                    }
                    Console.WriteLine($"{rows,4} | {vocab,5} | {Describe(temperature, topK, topP),14} | {perRow,10:F1} | {batched,10:F1} | {perRow / batched:F1}×");

                    double Run(bool batchedPath)
                    {
                        var options = new TianGong.Inference.SamplingOptions(MaxNewTokens: maxTokens, Temperature: temperature, TopK: topK, TopP: topP, StopAtEos: false);
                        var sequences = Enumerable.Range(0, rows).Select(b => new TianGong.Inference.DecodingSequence(options with { Seed = b }, vocab, [], tokenizer, [0])).ToArray();
                        var clock = Stopwatch.StartNew();
                        for (int t = 0; t < maxTokens; t++)
                        {
                            using var scope = NewDisposeScope();
                            var step = logits[t];
                            if (batchedPath)
                            {
                                TianGong.Inference.DecodingSequence.StepRows(sequences, step);
                                foreach (var s in sequences) s.NextText();
                            }
                            else
                                for (int b = 0; b < rows; b++)
                                {
                                    sequences[b].Step(step[b]);
                                    tokenizer.Decode(sequences[b].Generated.ToArray(), skipSpecialTokens: true);
                                }
                        }
                        double us = 1e6 * clock.Elapsed.TotalSeconds / (rows * maxTokens);
                        foreach (var s in sequences) s.Dispose();
                        return us;
                    }
                }
    }

    /// <summary>
    /// Sampling alone (<see cref="TianGong.Inference.DecodingSequence.StepRows"/>, no text) where every one of 16,384 ids
    /// can be chosen, as under poetry-small's own tokenizer: the figures above pad the bench tokenizer's few hundred ids
    /// to the model's vocabulary, so their top-k runs over a few hundred finite logits. Best of 5, µs per token.
    /// </summary>
    private static void FullVocabularySampling(int maxTokens)
    {
        const int Vocab = 16384;
        Console.WriteLine($"sampling alone over {Vocab} finite logits (no padding), {maxTokens} tokens per row, best of 5 (µs/token): rows | sampling | StepRows");
        using var _ = no_grad();
        foreach (int rows in new[] { 1, 16 })
            foreach (var (temperature, topK, topP) in Settings.Where(s => s.Temperature > 0))
            {
                manual_seed(2);
                using var logits = randn(maxTokens, rows, Vocab) * 4;
                double best = double.MaxValue;
                for (int round = 0; round < 5; round++)
                {
                    var options = new TianGong.Inference.SamplingOptions(MaxNewTokens: maxTokens, Temperature: temperature, TopK: topK, TopP: topP, StopAtEos: false);
                    var sequences = Enumerable.Range(0, rows).Select(b => new TianGong.Inference.DecodingSequence(options with { Seed = b }, Vocab, [], null, [0])).ToArray();
                    var clock = Stopwatch.StartNew();
                    for (int t = 0; t < maxTokens; t++)
                    {
                        using var scope = NewDisposeScope();
                        TianGong.Inference.DecodingSequence.StepRows(sequences, logits[t]);
                    }
                    best = Math.Min(best, 1e6 * clock.Elapsed.TotalSeconds / (rows * maxTokens));
                    foreach (var s in sequences) s.Dispose();
                }
                Console.WriteLine($"{rows,4} | {Describe(temperature, topK, topP),14} | {best,8:F1}");
            }
    }

    /// <summary>
    /// Sampling settings the decoding-core figures cover: greedy, plain temperature 1, and temperature 1 with the top-k and
    /// top-p of the bench model's generation_config.json (poetry-small's: top_k 40, top_p 0.95), which the server applies to
    /// every request that names neither, as the bench's requests do.
    /// </summary>
    private static readonly (double Temperature, int TopK, double TopP)[] Settings = [(0, 0, 1), (1, 0, 1), (1, 40, 0.95)];

    private static string Describe(double temperature, int topK, double topP) =>
        temperature == 0 ? "greedy" : topK == 0 && topP == 1 ? "T=1" : $"T=1 k{topK} p{topP}";

    /// <summary>The loaded model as the serving engine holds it: eval mode, its matrices moved onto cache lines
    /// (<see cref="DecodeMatmul.AlignWeights"/>), so raw and served decoding read the same memory.</summary>
    private static TianGong.Models.CausalLM AsServed(LoadedModel loaded)
    {
        var model = loaded.AsCausalLM("bench");
        model.eval();
        DecodeMatmul.AlignWeights(model);
        return model;
    }

    /// <summary>
    /// Issue 12's two serving ratios under a noisy, shared machine: <paramref name="rounds"/> rounds, each running every
    /// level served and raw (the same work: <paramref name="requestsPerStream"/> passes of <paramref name="maxTokens"/>
    /// tokens at batch = streams), the levels in reverse order every other round and raw before served in every other pair
    /// of rounds, so load that drifts over the run, and whatever one run leaves warm for the next, fall on served and raw,
    /// and on one stream and sixteen, alike. Each round gives its own ratios (served / raw at each level,
    /// the top level's served tokens/s against the first level's); the summary is their median, range and how many rounds
    /// reach the targets (one stream ≥ 0.9 of raw, 16 streams ≥ 8× one).
    /// </summary>
    private static void AlternatedRounds(string dir, ITextTokenizer tokenizer, int[] levels, int requestsPerStream, int maxTokens, double temperature, int rounds)
    {
        var served = levels.ToDictionary(l => l, _ => new List<double>());
        var raw = levels.ToDictionary(l => l, _ => new List<double>());
        Console.WriteLine($"alternated rounds: {rounds}; per round and level served and raw (raw first in rounds 3–4, 7–8, ...); tok/s");
        Console.WriteLine("round | " + string.Join(" | ", levels.Select(l => $"{l} served | {l} raw | {l} served/raw")) + $" | served {levels[^1]} / {levels[0]}");
        for (int round = 0; round < rounds; round++)
        {
            foreach (int streams in round % 2 == 0 ? levels : Enumerable.Reverse(levels))
            {
                bool rawFirst = round / 2 % 2 == 1;
                if (rawFirst) raw[streams].Add(RawDecode(dir, tokenizer, streams, maxTokens, repeats: requestsPerStream));
                served[streams].Add(RunLevel(dir, streams, requestsPerStream, maxTokens, temperature).GetAwaiter().GetResult().TokensPerSecond);
                if (!rawFirst) raw[streams].Add(RawDecode(dir, tokenizer, streams, maxTokens, repeats: requestsPerStream));
            }
            Console.WriteLine($"{round + 1,5} | " + string.Join(" | ", levels.Select(l => $"{served[l][round],8:F1} | {raw[l][round],8:F1} | {served[l][round] / raw[l][round],5:F2}"))
                + $" | {served[levels[^1]][round] / served[levels[0]][round],5:F2}× (load {ProfileBench.LoadAverage()})");
        }
        foreach (int streams in levels)
            Summary($"{streams} streams served / raw", Enumerable.Range(0, rounds).Select(r => served[streams][r] / raw[streams][r]), streams == 1 ? 0.9 : double.NaN);
        if (levels.Length > 1)
            Summary($"served {levels[^1]} streams / {levels[0]}", Enumerable.Range(0, rounds).Select(r => served[levels[^1]][r] / served[levels[0]][r]), levels is [1, .., 16] ? 8 : double.NaN);

        static void Summary(string name, IEnumerable<double> ratios, double target)
        {
            var sorted = ratios.Order().ToArray();
            double median = sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
            Console.WriteLine($"{name}: median {median:F2} (range {sorted[0]:F2}–{sorted[^1]:F2})"
                + (double.IsNaN(target) ? "" : $"; {sorted.Count(r => r >= target)} of {sorted.Length} rounds ≥ {target}"));
        }
    }

    /// <summary>Tokens/s of a bare greedy loop: the prompts' prefill, then one forward call per token for the whole batch,
    /// <paramref name="repeats"/> times over (a fresh cache each pass, as a served stream's next request starts afresh).</summary>
    /// <param name="engineCache">Decode through a cache set up as the serving engine's (16 slots of the whole context,
    /// per-row lengths): the model-side cost of serving, apart from the server.</param>
    private static double RawDecode(string dir, ITextTokenizer tokenizer, int batch, int maxTokens, bool engineCache = false, int repeats = 1)
    {
        using var loaded = ModelFolder.Load(dir);
        var model = AsServed(loaded);
        using var _ = no_grad();
        var prompt = tokenizer.Encode(Poems[0][..5]).Select(i => (long)i).ToArray();
        var clock = new Stopwatch();
        for (int pass = 0; pass < repeats; pass++)
        {
            using var cache = engineCache ? model.CreateCache(16, model.Config.ContextLength) : model.CreateCache(batch, prompt.Length + maxTokens);
            if (engineCache)
            {
                cache.UsePerRowLengths();
                cache.SelectRows(0, batch);
            }
            clock.Start();
            var next = tensor(Enumerable.Repeat(prompt, batch).SelectMany(p => p).ToArray(), [batch, prompt.Length]);
            for (int i = 0; i < maxTokens; i++)
            {
                using var scope = NewDisposeScope();
                var logits = model.forward(next, cache).select(1, -1);                                 // (B, V)
                next.Dispose();
                next = logits.argmax(-1).unsqueeze(1).DetachFromDisposeScope();                         // (B, 1)
            }
            next.Dispose();
            clock.Stop();
        }
        return (double)batch * maxTokens * repeats / clock.Elapsed.TotalSeconds;
    }

    /// <summary>Tokens/s of what <c>tiangong generate</c> runs: TextGenerator over the decoding core, greedy, exactly maxTokens tokens.</summary>
    private static double CliGenerate(string dir, ITextTokenizer tokenizer, int maxTokens)
    {
        using var loaded = ModelFolder.Load(dir);
        var generator = new TianGong.Inference.TextGenerator(loaded.AsCausalLM("bench"), tokenizer);
        var prompt = tokenizer.Encode(Poems[0][..5]);
        var clock = Stopwatch.StartNew();
        var result = generator.GenerateIds([prompt], new TianGong.Inference.SamplingOptions(MaxNewTokens: maxTokens, Temperature: 0, StopAtEos: false))[0];
        return result.Generated.Length / clock.Elapsed.TotalSeconds;
    }

    /// <summary>Tokens/s of the serving engine with the requests of <see cref="RunLevel"/> submitted in-process: no Kestrel, no client.</summary>
    private static double EngineOnly(string dir, ITextTokenizer tokenizer, int streams, int requestsPerStream, int maxTokens, double temperature)
    {
        using var loaded = ModelFolder.Load(dir);
        using var engine = new ServingEngine(loaded.AsCausalLM("bench"), tokenizer, new ServingOptions(MaxBatch: 16, MaxQueue: 64));
        static async Task<long> Drain(System.Threading.Channels.ChannelReader<CompletionChunk> reader)
        {
            long n = 0;
            await foreach (var chunk in reader.ReadAllAsync()) n += chunk.Tokens.Count;
            return n;
        }
        Drain(engine.Submit(new CompletionRequest(tokenizer.Encode(Poems[0][..5]), 4))).GetAwaiter().GetResult(); // warm-up, as RunLevel
        long tokens = 0;
        var clock = Stopwatch.StartNew();
        Task.WhenAll(Enumerable.Range(0, streams).Select(async s =>
        {
            for (int r = 0; r < requestsPerStream; r++)
                Interlocked.Add(ref tokens, await Drain(engine.Submit(new CompletionRequest(tokenizer.Encode(Poems[(s + r) % Poems.Length][..5]), maxTokens, Temperature: temperature, Seed: s * 100 + r, IgnoreEos: true))));
        })).GetAwaiter().GetResult();
        return tokens / clock.Elapsed.TotalSeconds;
    }

    /// <summary>
    /// Why choosing a token costs more in the server than in <see cref="DecodingCoreOverhead"/>: the decoding core's call on
    /// one row (as the engine makes it for one stream), timed right after different work on the same thread, and the
    /// sampling ops of before this change (a replica: every check and choice a libtorch op) against the decoding core
    /// now, alternated step by step after the same decode forward passes.
    /// </summary>
    private static void SamplingAfterForward(string dir, ITextTokenizer tokenizer, int maxTokens)
    {
        using var loaded = ModelFolder.Load(dir);
        var model = AsServed(loaded);
        using var _ = no_grad();
        var prompt = tokenizer.Encode(Poems[0][..5]).Select(i => (long)i).ToArray();
        int threads = torch.get_num_threads();
        var big = new float[24 << 20];
        var copy = new float[24 << 20];
        string[] before = ["a decode forward pass", $"a decode forward pass on 1 thread (not {threads})", "two 96 MB copies in C#, no torch", "nothing (the same logits again)"];
        foreach (var (temperature, topK, topP) in Settings)
        {
            var sums = new double[before.Length];
            for (int round = 0; round < 4; round++)
                for (int v = 0; v < before.Length; v++)
                {
                    double us = Steps(temperature, topK, topP, i => v switch
                    {
                        1 => 1,
                        2 or 3 when i > 0 => v,
                        _ => 0,
                    }, big, copy)[0];
                    if (round > 0) sums[v] += us / 3;                                               // round 0 warms up
                }
            for (int v = 0; v < before.Length; v++)
                Console.WriteLine($"{Describe(temperature, topK, topP),14}: decoding core on 1 row after {before[v]}: {sums[v],6:F1} µs (mean of 3 rounds of {maxTokens} steps)");
        }
        foreach (var (temperature, topK, topP) in Settings)
        {
            double[] sums = [0, 0];
            for (int round = 0; round < 4; round++)
            {
                var r = Steps(temperature, topK, topP, _ => 0, big, copy, alternateReplica: true);
                if (round > 0) { sums[0] += r[1] / 3; sums[1] += r[0] / 3; }
            }
            Console.WriteLine($"{Describe(temperature, topK, topP),14}: after a decode forward pass, alternated: sampling ops before this change {sums[0]:F1} µs, decoding core now {sums[1]:F1} µs");
        }

        // Mean µs of the decoding core's call per step (and of the replica's, on odd steps, when alternating). What runs
        // before each call: 0 a forward pass, 1 a forward pass on one thread, 2 two large copies, 3 nothing.
        double[] Steps(double temperature, int topK, double topP, Func<int, int> work, float[] a, float[] b, bool alternateReplica = false)
        {
            using var cache = model.CreateCache(16, model.Config.ContextLength);
            cache.UsePerRowLengths();
            cache.SelectRows(0, 1);
            var options = new TianGong.Inference.SamplingOptions(MaxNewTokens: 1 << 20, Temperature: temperature, TopK: topK, TopP: topP, StopAtEos: false);
            using var sequence = new TianGong.Inference.DecodingSequence(options with { Seed = 1 }, model.Config.VocabSize, [], tokenizer, [0]);
            using var generator = new torch.Generator(1);
            var next = tensor(prompt, [1, prompt.Length]);
            Tensor? last = null;
            double[] ticks = [0, 0];
            int[] counts = [0, 0];
            for (int i = 0; i < maxTokens; i++)
            {
                using var scope = NewDisposeScope();
                int kind = work(i);
                Tensor logits;
                if (kind <= 1)
                {
                    if (kind == 1) torch.set_num_threads(1);
                    logits = model.forward(next, cache).select(1, -1);                              // (1, V)
                    torch.set_num_threads(threads);
                    last?.Dispose();
                    last = logits.clone().DetachFromDisposeScope();
                }
                else
                {
                    if (kind == 2) { Array.Copy(a, b, a.Length); Array.Copy(b, a, a.Length); }
                    logits = last!;
                }
                bool replica = alternateReplica && i % 2 == 1;
                long start = Stopwatch.GetTimestamp();
                int token = replica ? SampleWithTorchOps(logits, options, generator)
                    : TianGong.Inference.DecodingSequence.StepRows([sequence], logits)[0].Step!.Token;
                ticks[replica ? 1 : 0] += Stopwatch.GetTimestamp() - start;
                counts[replica ? 1 : 0]++;
                next.Dispose();
                next = tensor(new long[] { token }, [1, 1]).DetachFromDisposeScope();
            }
            next.Dispose();
            last?.Dispose();
            return [1e6 * ticks[0] / Stopwatch.Frequency / Math.Max(1, counts[0]), 1e6 * ticks[1] / Stopwatch.Frequency / Math.Max(1, counts[1])];
        }
    }

    /// <summary>What LogitsProcessing.SampleRows ran on one row before issue 12's change, op for op (the reference for the probe).</summary>
    private static int SampleWithTorchOps(Tensor logits, TianGong.Inference.SamplingOptions options, torch.Generator generator)
    {
        using var scope = NewDisposeScope();
        var group = logits.to(ScalarType.Float32);
        var (values, indices) = group.max(-1);
        var best = values.data<float>().ToArray();
        if (!float.IsFinite(best[0])) throw new InvalidOperationException("not finite");
        Tensor chosen = indices;
        if (!options.IsGreedy)
        {
            var probs = TianGong.Inference.LogitsProcessing.ApplyTopP(TianGong.Inference.LogitsProcessing.ApplyTopK(group / options.Temperature, options.TopK), options.TopP).softmax(-1);
            var q = empty_like(probs);
            q[0].exponential_(1, generator);
            chosen = (probs / q).argmax(-1);
        }
        return (int)chosen.data<long>().ToArray()[0];
    }

    private static async Task<(string Row, double TokensPerSecond, string Profile)> RunLevel(string dir, int streams, int requestsPerStream, int maxTokens, double temperature)
    {
        var options = new ServerOptions(dir, Port: 0, Serving: new ServingOptions(MaxBatch: 16, MaxQueue: 64));
        await using var app = TianGongServer.Build(options);
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        var host = app.Services.GetRequiredService<ModelHost>();
        while (host.Engine is null) await Task.Delay(20);
        using var client = new HttpClient { BaseAddress = new Uri(address), Timeout = TimeSpan.FromMinutes(10) };
        // The first forward passes and requests through the server pay one-time costs (JIT, libtorch's kernel selection) that
        // are not serving overhead. Untimed warm-up at the level's concurrency (the model's kernels differ by batch), twice: the runtime starts counting
        // calls for tier-1 recompilation only once no new method has been compiled for a while, so after one round the
        // hot methods would still be recompiled in the timed part (measured: the tiering thread took ~10% of the CPU of a
        // 1-stream level), and raw decoding, run after the served level, would get the recompiled code for free.
        for (int round = 0; round < 2; round++)
        {
            await Task.WhenAll(Enumerable.Range(0, streams).Select(async s =>
            {
                using var warm = await client.PostAsync("/v1/completions", JsonContent.Create(new { model = "poetry-small", prompt = Poems[s % Poems.Length][..5], max_tokens = 64, ignore_eos = true, stream = true }));
                warm.EnsureSuccessStatusCode();
                await warm.Content.ReadAsStringAsync();
            }));
            await Task.Delay(500);                                                                   // background recompilation
        }
        var ttft = new List<double>();
        long tokens = 0;
        var before = host.Engine.Metrics.Phases;
        var cpuBefore = ThreadCpu.Sample();
        long startTicks = Stopwatch.GetTimestamp();
        var clock = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, streams).Select(async s =>
        {
            for (int r = 0; r < requestsPerStream; r++)
            {
                var watch = Stopwatch.StartNew();
                var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
                {
                    Content = JsonContent.Create(new { model = "poetry-small", prompt = Poems[(s + r) % Poems.Length][..5], max_tokens = maxTokens, temperature, seed = s * 100 + r, ignore_eos = true, stream = true, stream_options = new { include_usage = true } }),
                };
                using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
                response.EnsureSuccessStatusCode();
                using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
                bool first = true;
                while (await reader.ReadLineAsync() is { } line)
                {
                    if (!line.StartsWith("data: ") || line == "data: [DONE]") continue;
                    if (first) { lock (ttft) ttft.Add(watch.Elapsed.TotalMilliseconds); first = false; }
                    if (line.Contains("\"usage\":{"))
                        Interlocked.Add(ref tokens, System.Text.Json.JsonDocument.Parse(line[6..]).RootElement.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
                }
            }
        }));
        double seconds = clock.Elapsed.TotalSeconds;
        var phases = host.Engine.Metrics.Phases - before;
        var cpu = ThreadCpu.Since(cpuBefore);
        // The timed part on the monotonic clock perf stamps its samples with: `perf report --time START,END` profiles it alone.
        Console.WriteLine($"{streams} streams, timed part (monotonic s): {(double)startTicks / Stopwatch.Frequency:F6},{(double)Stopwatch.GetTimestamp() / Stopwatch.Frequency:F6}");
        double busy = phases.PrefillSeconds + phases.ForwardSeconds + phases.SampleSeconds + phases.EmitSeconds;
        string profile = $"{streams,7} | {phases.DecodeSteps,5} | {1e3 * phases.ForwardSeconds / Math.Max(1, phases.DecodeSteps),15:F2} | "
            + $"{1e6 * phases.SampleSeconds / Math.Max(1, tokens),15:F1} | {1e6 * phases.EmitSeconds / Math.Max(1, tokens),13:F1} | "
            + $"{1e3 * phases.PrefillSeconds,16:F1} | {busy / seconds,6:P0} | "
            + string.Join(", ", cpu.OrderByDescending(c => c.Value).Select(c => $"{c.Key} {1e6 * c.Value / Math.Max(1, tokens):F0}"));
        ttft.Sort();
        double P(double q) => ttft[Math.Min(ttft.Count - 1, (int)Math.Ceiling(q * ttft.Count) - 1)];
        await app.StopAsync();
        return ($"{streams,7} | {streams * requestsPerStream,8} | {tokens / seconds,12:F1} | {P(0.5),11:F1} | {P(0.99),11:F1}", tokens / seconds, profile);
    }

    /// <summary>
    /// CPU seconds spent by this process's threads, grouped by thread name, from /proc/self/task (Linux; empty elsewhere):
    /// where the served path's CPU goes besides the forward pass, on a machine whose cores the forward pass wants.
    /// </summary>
    private static class ThreadCpu
    {
        public static Dictionary<int, (string Name, double Seconds)> Sample()
        {
            var threads = new Dictionary<int, (string, double)>();
            if (!Directory.Exists("/proc/self/task")) return threads;
            foreach (var dir in Directory.GetDirectories("/proc/self/task"))
            {
                try
                {
                    var stat = File.ReadAllText(Path.Combine(dir, "stat"));
                    var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');                  // fields from 3 on: state is [0]
                    double ticks = double.Parse(fields[11]) + double.Parse(fields[12]);          // utime + stime (fields 14, 15)
                    threads[int.Parse(Path.GetFileName(dir))] = (Group(File.ReadAllText(Path.Combine(dir, "comm")).Trim()), ticks / 100);
                }
                catch (IOException) { }                                                            // the thread ended meanwhile
            }
            return threads;
        }

        public static Dictionary<string, double> Since(Dictionary<int, (string Name, double Seconds)> before) =>
            Sample().GroupBy(t => t.Value.Name).ToDictionary(g => g.Key,
                g => g.Sum(t => t.Value.Seconds - (before.TryGetValue(t.Key, out var b) ? b.Seconds : 0)));

        // libgomp's workers take the name of the thread that started them (the scheduler); .NET pool threads share one name.
        private static string Group(string comm) => comm switch
        {
            "tiangong-schedu" => "scheduler",
            ".NET TP Worker" => "pool",
            ".NET Sockets" => "sockets",
            ".NET Tiered Com" => "jit",
            _ => "other",
        };
    }
}
