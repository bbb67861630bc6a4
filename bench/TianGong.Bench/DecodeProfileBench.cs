using System.Diagnostics;
using TianGong.Models;
using TianGong.Models.Layers;
using TianGong.Training;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Bench;

/// <summary>
/// Where one KV-cache decode step's time goes, at batch 1 and 16 (issue 12, part 4). TorchSharp has no profiler
/// binding, but libtorch runs synchronously on the CPU, so a stopwatch around each op is exact. For each batch, in
/// interleaved rounds (load that drifts hits every path alike), best round of each:
/// <list type="bullet">
/// <item>the model's own step, <c>CausalLM.forward(next, cache)</c> + argmax, with a shared-length cache (what
/// <c>generate</c> and the raw decode loop run) and with a per-row cache (what the serving engine runs);</item>
/// <item>the same step written out op by op on the model's parameters (GPT-2 only), each op's time added to its
/// component (embedding, norms, qkv, KV write, SDPA, attention output projection, MLP, LM head, the rest); its logits are
/// checked against the model's, so it is the same computation with no module, scope or context machinery around it.
/// Steps alternate between the computation as it was before issue 12's decode work and candidate replacements (the
/// transposed tied head, and the decode kernel <see cref="DecodeMatmul"/> for every block product and the head; the
/// rejected attention without SDPA and transposed block products can be put back in the list), so each pair is timed
/// under the same load;</item>
/// <item>the matmuls alone (qkv, c_proj, c_fc, c_proj per layer and the LM head, same shapes): the floor of a step.</item>
/// </list>
/// The model step minus the op-by-op step is framework overhead (module calls, dispose scopes, attention context,
/// shape queries); the op-by-op step minus its matmuls is the cost of the small ops. First the cost of one trivial op
/// and of one decode token's attention; with <c>--shapes</c>, each projection shape in each of libtorch's MKL layouts.
/// </summary>
internal static class DecodeProfileBench
{
    private const int Prompt = 8;

    private enum Part { Embedding, Norms, Qkv, KvWrite, Sdpa, AttnProj, Mlp, LmHead, Rest }

    public static int Run(string[] allArgs)
    {
        bool shapes = allArgs.Contains("--shapes");
        var args = allArgs.Where(a => !a.StartsWith("--", StringComparison.Ordinal)).ToArray();
        string configPath = args.Length > 0 ? args[0] : "configs/poetry-small.json";
        int steps = args.Length > 1 ? int.Parse(args[1]) : 32;
        int threads = args.Length > 2 ? int.Parse(args[2]) : 2;
        int rounds = args.Length > 3 ? int.Parse(args[3]) : 5;
        int[] batches = args.Length > 4 ? args[4].Split(',').Select(int.Parse).ToArray() : [1, 16];
        set_num_threads(threads);
        Console.WriteLine($"load average at start: {ProfileBench.LoadAverage()}");
        using var model = BenchModels.RandomDecoder(configPath);
        var config = model.Config;
        using var _ = no_grad();
        Console.WriteLine($"model: {configPath} ({config.ModelType}), {model.ParameterCount() / 1e6:F1}M parameters, vocab 16384, random weights; "
            + $"torch threads {threads}; {steps} decode steps after a {Prompt}-token prompt, best of {rounds} rounds");
        TrivialOps();
        // --lengths=40,100,200: the kernel alone over these cache lengths too; --groups=4: 8 / 4 key/value heads for
        // the 8 query heads (grouped-query attention); --kernel-only: stop after it.
        int[] lengths = allArgs.FirstOrDefault(a => a.StartsWith("--lengths=", StringComparison.Ordinal)) is { } l
            ? l["--lengths=".Length..].Split(',').Select(int.Parse).ToArray() : [40];
        int groups = allArgs.FirstOrDefault(a => a.StartsWith("--groups=", StringComparison.Ordinal)) is { } g ? int.Parse(g["--groups=".Length..]) : 1;
        foreach (int length in lengths) KernelAttention(length, groups);
        if (allArgs.Contains("--kernel-only")) return 0;
        if (allArgs.Contains("--attention"))
        {
            foreach (int batch in batches) AttentionPaths(model, batch, steps, rounds);
            Console.WriteLine($"load average at end: {ProfileBench.LoadAverage()}");
            return 0;
        }
        if (shapes) MatmulShapes(config, batches);
        if (!allArgs.Contains("--model-only")) SmallOps(config, batches, Math.Max(rounds, 1));

        var weights = model.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
        bool replica = config.ModelType == "gpt2" && weights.ContainsKey("transformer.h.0.attn.c_attn.weight") && !allArgs.Contains("--model-only");
        // The rejected candidates of the first profile (attention by mul+sum, transposed block products) can be put back
        // in this list; the decode kernel replaced the transposed head in the model.
        Variant[] variants = [Variant.Before, new(true, false, false), new(false, false, false, Kernel: true)];
        foreach (int batch in rounds > 0 ? batches : [])
        {
            double shared = double.MaxValue, perRow = double.MaxValue, matmuls = double.MaxValue, kernelMatmuls = double.MaxValue;
            long sharedHandles = 0, perRowHandles = 0;
            var opByOp = new List<(double Seconds, double[] Parts, int Ops, double MaxDiff)[]>();
            for (int round = 0; round < rounds; round++)
            {
                shared = Math.Min(shared, ModelStep(model, batch, steps, perRowCache: false, out sharedHandles));
                perRow = Math.Min(perRow, ModelStep(model, batch, steps, perRowCache: true, out perRowHandles));
                if (!replica) continue;
                opByOp.Add(OpByOpStep(model, weights, config, batch, steps * variants.Length, variants));
                matmuls = Math.Min(matmuls, MatmulStep(weights, config, batch, steps, kernel: false));
                kernelMatmuls = Math.Min(kernelMatmuls, MatmulStep(weights, config, batch, steps, kernel: true));
            }
            Console.WriteLine();
            Console.WriteLine($"batch {batch}: model step {shared * 1e3:F2} ms ({batch / shared:F1} tok/s) with a shared-length cache, "
                + $"{perRow * 1e3:F2} ms ({batch / perRow:F1} tok/s) with a per-row cache (best round); tensor handles created per step {sharedHandles} / {perRowHandles}");
            if (!replica) { Console.WriteLine("(op-by-op breakdown: GPT-2 models only)"); continue; }
            Console.WriteLine($"matmuls alone: libtorch {matmuls * 1e3:F2} ms ({batch / matmuls:F1} tok/s), decode kernel {kernelMatmuls * 1e3:F2} ms ({batch / kernelMatmuls:F1} tok/s)");
            // Per variant, the round with the fastest median step.
            var best = Enumerable.Range(0, variants.Length).Select(i => opByOp.Select(r => r[i]).MinBy(r => r.Seconds)).ToArray();
            Console.WriteLine("op by op, steps alternating between variants, median step of the best round:");
            for (int i = 0; i < variants.Length; i++)
                Console.WriteLine($"  {variants[i]}: {best[i].Seconds * 1e3:F2} ms ({batch / best[i].Seconds:F1} tok/s), {best[i].Ops} torch ops, logits max |diff| vs the model {best[i].MaxDiff:E1}");
            Console.WriteLine("component | " + string.Join(" | ", variants.Select(v => v.ToString())) + " (median ms per step)");
            foreach (var part in Enum.GetValues<Part>())
                Console.WriteLine($"{part} | " + string.Join(" | ", best.Select(b => $"{b.Parts[(int)part] * 1e3:F3}")));
            // The model runs its products through the decode kernel: compare it with the op-by-op step that does too.
            var before = best[0];
            var kernel = best[Array.FindIndex(variants, v => v.Kernel)];
            Console.WriteLine($"framework (model step − op by op with the decode kernel) | {(shared - kernel.Seconds) * 1e3:F3} ms, {(shared - kernel.Seconds) / shared:P1} of the model step");
            Console.WriteLine($"small ops (op by op with libtorch − libtorch's matmuls alone) | {(before.Seconds - matmuls) * 1e3:F3} ms, {(before.Seconds - matmuls) / before.Seconds:P1}");
            Console.WriteLine($"small ops (op by op with the kernel − the kernel's matmuls alone) | {(kernel.Seconds - kernelMatmuls) * 1e3:F3} ms, {(kernel.Seconds - kernelMatmuls) / kernel.Seconds:P1}");
        }
        Console.WriteLine($"load average at end: {ProfileBench.LoadAverage()}");
        return 0;
    }

    /// <summary>The price of one op through TorchSharp: P/Invoke, libtorch's dispatcher, a tensor handle, its disposal.</summary>
    private static void TrivialOps()
    {
        using var x = ones(1);
        using var y = ones(1);
        using var big = ones(16, 512);
        const int n = 5000;
        double inPlace = Time(() => x.add_(y));
        double allocating = Time(() => { using var z = x.add(y); });
        double scoped = Time(() => { using var scope = NewDisposeScope(); x.add(y); });
        double view = Time(() => { using var z = big.view(8192, 1); });
        double shape = Time(() => _ = big.shape);
        Console.WriteLine($"one trivial op (µs): in place {inPlace:F2}, allocating + Dispose {allocating:F2}, in its own dispose scope {scoped:F2}, "
            + $"a view {view:F2}, reading .shape {shape:F2}");
        foreach (int b in new[] { 1, 16 })
        {
            using var scope = NewDisposeScope();
            var (q, k, v) = (randn(b, 8, 1, 64), randn(b, 8, 40, 64), randn(b, 8, 40, 64));
            double sdpa = Time(() => { using var y = F.scaled_dot_product_attention(q, k, v); });
            double manual = Time(() => { using var inner = NewDisposeScope(); softmax(q.matmul(k.transpose(2, 3)).mul_(0.125), -1).matmul(v); });
            // The per-row cache's mask: (B, 1, 1, S) bool, row r sees its first 40 − r % 8 keys; then the same as an additive float mask.
            var boolMask = arange(40).view(1, 1, 1, 40) < (40 - arange(b) % 8).view(b, 1, 1, 1);
            var floatMask = zeros(b, 1, 1, 40).masked_fill(boolMask.logical_not(), double.NegativeInfinity);
            double withBool = Time(() => { using var y = F.scaled_dot_product_attention(q, k, v, boolMask); });
            double withFloat = Time(() => { using var y = F.scaled_dot_product_attention(q, k, v, floatMask); });
            Console.WriteLine($"attention of one decode token per row, batch {b}, 8 heads × 64 over 40 positions, back to back (µs): SDPA {sdpa:F1}, "
                + $"SDPA with the per-row bool mask {withBool:F1}, with it as a float mask {withFloat:F1}, q·kᵀ-softmax-·v {manual:F1}");
        }

        static double Time(Action op)
        {
            for (int i = 0; i < 1000; i++) op();
            double best = double.MaxValue;
            for (int r = 0; r < 3; r++)
            {
                var clock = Stopwatch.StartNew();
                for (int i = 0; i < n; i++) op();
                best = Math.Min(best, clock.Elapsed.TotalSeconds / n * 1e6);
            }
            return best;
        }
    }

    /// <summary>
    /// The decode-attention kernel on the shapes <see cref="TrivialOps"/> gives SDPA (8 heads × 64, 40 positions, row r
    /// holding 40 − r % 8 of them; or <paramref name="positions"/>): <c>KvCache.TryAttendOne</c> on a per-row cache, the
    /// new key and value written included.
    /// </summary>
    private static void KernelAttention(int positions, int groups)
    {
        if (!DecodeAttention.Supported) return;
        foreach (int b in new[] { 1, 16 })
        {
            using var scope = NewDisposeScope();
            int kvHeads = 8 / groups;
            using var cache = new KvCache(1, b, kvHeads, Math.Max(64, positions), 64, ScalarType.Float32, CPU);
            cache.UsePerRowLengths();
            for (int r = 0; r < b; r++)
            {
                int length = positions - 1 - r % 8;
                cache.SelectRows(r, 1);
                cache.NextSlots(length, CPU);
                cache.Append(0, randn(1, kvHeads, length, 64), randn(1, kvHeads, length, 64));
                cache.Advance(length);
            }
            cache.SelectRows(0, b);
            cache.NextSlots(1, CPU);
            var (q, k, v) = (randn(b, 8, 1, 64), randn(b, kvHeads, 1, 64), randn(b, kvHeads, 1, 64));
            int n = 5000 * 40 / Math.Max(40, positions); // about the same time per length
            for (int i = 0; i < 1000; i++) cache.TryAttendOne(0, q, k, v, groups, null)!.Dispose();
            double best = double.MaxValue;
            for (int round = 0; round < 3; round++)
            {
                var clock = Stopwatch.StartNew();
                for (int i = 0; i < n; i++) cache.TryAttendOne(0, q, k, v, groups, null)!.Dispose();
                best = Math.Min(best, clock.Elapsed.TotalSeconds / n * 1e6);
            }
            // Each call timed alone too: on a loaded machine the fastest tenth of the calls is what the kernel costs when it runs.
            var each = new double[n];
            for (int i = 0; i < n; i++)
            {
                long start = Stopwatch.GetTimestamp();
                cache.TryAttendOne(0, q, k, v, groups, null)!.Dispose();
                each[i] = Stopwatch.GetElapsedTime(start).TotalMicroseconds;
            }
            Array.Sort(each);
            string over = (positions == 40 ? "" : $", {positions} positions") + (groups == 1 ? "" : $", {kvHeads} key/value heads");
            Console.WriteLine($"the same with the decode-attention kernel (KvCache.TryAttendOne, per-row cache, key/value write included{over}), batch {b} (µs): {best:F1}"
                + $"; per call: fastest tenth ≤ {each[n / 10]:F1}, median {each[n / 2]:F1}");
        }
    }

    /// <summary>
    /// The model's step with the decode-attention kernel against the same step on libtorch's attention path, steps
    /// alternating on one cache (so each pair of steps sees the same load and nearly the same length), with a shared-length
    /// and with a per-row cache. The libtorch steps pass an all-ones attention mask, which is what sends them there (the
    /// kernel takes no padding mask): beside the base commit's step that costs three more small ops per step (the mask's
    /// conversion and combination), not per layer. Median step of each path, best of the rounds.
    /// </summary>
    private static void AttentionPaths(CausalLM model, int batch, int steps, int rounds)
    {
        foreach (bool perRow in new[] { false, true })
        {
            double kernel = double.MaxValue, libtorch = double.MaxValue;
            for (int round = 0; round < Math.Max(1, rounds); round++)
            {
                using var cache = model.CreateCache(batch, Prompt + 2 * steps + 1);
                if (perRow) cache.UsePerRowLengths();
                if (perRow) cache.SelectRows(0, batch);
                using var prompt = randint(0, 100, [batch, Prompt]);
                var next = model.forward(prompt, cache).select(1, -1).argmax(-1).unsqueeze(1);
                var times = new[] { new List<double>(), new List<double>() };
                for (int s = 0; s < 2 * steps; s++)
                {
                    using var scope = NewDisposeScope();
                    bool viaLibtorch = s % 2 == 1;
                    if (perRow) cache.SelectRows(0, batch);
                    var mask = viaLibtorch ? ones(batch, cache.Length + 1, dtype: ScalarType.Int64) : null;
                    var clock = Stopwatch.StartNew();
                    var token = model.Forward(new DecoderInput { InputIds = next, AttentionMask = mask, Cache = cache }).Logits.select(1, -1).argmax(-1).unsqueeze(1); // (B, 1)
                    times[viaLibtorch ? 1 : 0].Add(clock.Elapsed.TotalSeconds);
                    next.Dispose();
                    next = token.MoveToOuterDisposeScope();
                }
                next.Dispose();
                kernel = Math.Min(kernel, Median(times[0]));
                libtorch = Math.Min(libtorch, Median(times[1]));
            }
            Console.WriteLine($"batch {batch}, {(perRow ? "per-row" : "shared-length")} cache, {Prompt} + {2 * steps} positions: model step with the attention kernel {kernel * 1e3:F2} ms, "
                + $"on libtorch's attention path {libtorch * 1e3:F2} ms ({libtorch / kernel:F2}×), median step, best of {Math.Max(1, rounds)} rounds");
        }
    }

    /// <summary>
    /// Each projection shape of the step, in the three ways libtorch can hand it to MKL, with weights cycled through
    /// enough copies (≥ 96 MB) that every call reads its weight from memory, not the cache, as a decode step does:
    /// x·W on GPT-2's stored (in, out) layout (addmm; MKL sgemm N,N,out,B,in), x·Wᵀ on nn.Linear's (out, in) layout
    /// (linear; sgemm T,N,out,B,in), and the transposed product (W·xᵀ)ᵀ on (out, in) (sgemm T,N,B,out,in).
    /// </summary>
    private static void MatmulShapes(ICausalLMConfig config, int[] batches)
    {
        long c = config.ModelWidth;
        var shapes = new (string Name, long In, long Out)[] { ("qkv", c, 3 * c), ("attn proj", c, c), ("mlp up", c, 4 * c), ("mlp down", 4 * c, c), ("lm head", c, 16384) };
        Console.WriteLine($"fp32 matmul peak (2048^3): {ProfileBench.MatmulPeakGflops():F1} GFLOP/s");
        Console.WriteLine("shape | batch | x·W on (in,out): µs, GB/s, GFLOP/s | x·Wᵀ on (out,in) | (W·xᵀ)ᵀ on (out,in) | (W·xᵀ)ᵀ on (in,out), W a view");
        foreach (var (name, inF, outF) in shapes)
            foreach (int batch in batches)
            {
                using var scope = NewDisposeScope();
                int copies = (int)Math.Max(2, 96L * 1024 * 1024 / (inF * outF * 4));
                var w = Enumerable.Range(0, copies).Select(_ => randn(inF, outF)).ToArray();
                var wt = w.Select(x => x.t().contiguous()).ToArray();
                var bias = randn(outF);
                var bcol = bias.unsqueeze(1);
                var x = randn(batch, inF);
                double a = 0, l = 0, m = 0, v = 0;
                for (int r = 0; r < 3; r++) // interleaved rounds, best of each
                {
                    a = Min(a, Time(i => addmm(bias, x, w[i], beta: 1, alpha: 1)));
                    l = Min(l, Time(i => F.linear(x, wt[i], bias)));
                    m = Min(m, Time(i => addmm(bcol, wt[i], x.t(), beta: 1, alpha: 1).t()));
                    v = Min(v, Time(i => addmm(bcol, w[i].t(), x.t(), beta: 1, alpha: 1).t()));
                }
                double bytes = inF * outF * 4.0, flops = 2.0 * batch * inF * outF;
                string Row(double sec) => $"{sec * 1e6:F1}, {bytes / sec / 1e9:F1}, {flops / sec / 1e9:F1}";
                Console.WriteLine($"{name} {inF}x{outF} | {batch} | {Row(a)} | {Row(l)} | {Row(m)} | {Row(v)}");

                double Time(Func<int, Tensor> op)
                {
                    for (int i = 0; i < copies; i++) op(i).Dispose();
                    int n = Math.Max(copies, 40);
                    var clock = Stopwatch.StartNew();
                    for (int i = 0; i < n; i++) op(i % copies).Dispose();
                    return clock.Elapsed.TotalSeconds / n;
                }
            }

        static double Min(double best, double t) => best == 0 ? t : Math.Min(best, t);
    }

    /// <summary>Seconds per decode step of the model itself, prompt prefill excluded.</summary>
    private static double ModelStep(CausalLM model, int batch, int steps, bool perRowCache, out long handlesPerStep)
    {
        using var cache = model.CreateCache(batch, Prompt + steps + 1);
        if (perRowCache)
        {
            cache.UsePerRowLengths();
            cache.SelectRows(0, batch);
        }
        using var prompt = randint(0, 100, [batch, Prompt]);
        var next = model.forward(prompt, cache).select(1, -1).argmax(-1).unsqueeze(1);
        long handles = TensorsCreated();
        var clock = Stopwatch.StartNew();
        for (int s = 0; s < steps; s++)
        {
            using var scope = NewDisposeScope();
            if (perRowCache) cache.SelectRows(0, batch);                                          // as the serving engine does each step
            var token = model.forward(next, cache).select(1, -1).argmax(-1).unsqueeze(1);        // (B, 1)
            next.Dispose();
            next = token.MoveToOuterDisposeScope();
        }
        double seconds = clock.Elapsed.TotalSeconds / steps;
        handlesPerStep = (TensorsCreated() - handles) / steps;
        next.Dispose();
        return seconds;
    }

    /// <summary>Tensor handles TorchSharp has created on this thread: about one per libtorch op (in-place ops none, chunk several).</summary>
    private static long TensorsCreated()
    {
        var stats = TorchSharp.DisposeScopeManager.Statistics.TensorStatistics;
        return stats.CreatedInScopeCount + stats.CreatedOutsideScopeCount;
    }

    /// <summary>What the op-by-op step computes as it did before this change, and each candidate replacement.</summary>
    private sealed record Variant(bool TransposedHead, bool ManualAttention, bool TransposedBlocks, bool Kernel = false)
    {
        public static readonly Variant Before = new(false, false, false);
        public override string ToString() => this == Before ? "libtorch (linear head, SDPA, x·W)"
            : string.Join(", ", new[] { TransposedHead ? "transposed head" : null, ManualAttention ? "attention by mul+sum" : null, TransposedBlocks ? "(Wᵀ·xᵀ)ᵀ blocks" : null,
                Kernel ? "decode kernel (blocks and head)" : null }.OfType<string>());
    }

    /// <summary>
    /// GPT-2's decode step op by op on the model's parameters and its own preallocated cache; each op's time goes to its
    /// component. Steps alternate between the variants (paired: neighbouring steps see the same load, and every step
    /// streams the whole model, so each finds its weights in memory, not cache). Per variant: the median step, the
    /// median of each component, ops per step, and the largest logit difference from the model's own step.
    /// </summary>
    private static (double Seconds, double[] Parts, int Ops, double MaxDiff)[] OpByOpStep(CausalLM model, Dictionary<string, Tensor> w,
        ICausalLMConfig config, int batch, int steps, Variant[] variants)
    {
        int layers = config.LayerCount;
        long c = config.ModelWidth;
        var gpt2 = (TianGong.Models.Gpt2.Gpt2Config)config;
        long heads = gpt2.NHead, d = c / heads;
        double eps = gpt2.LayerNormEpsilon;
        int maxLen = Prompt + steps + 1;
        var keys = Enumerable.Range(0, layers).Select(_ => zeros(batch, heads, maxLen, d)).ToArray();
        var values = Enumerable.Range(0, layers).Select(_ => zeros(batch, heads, maxLen, d)).ToArray();
        // The prompt through the model fills a model cache; its keys and values are copied into ours.
        using var cache = model.CreateCache(batch, maxLen);
        using var prompt = randint(0, 100, [batch, Prompt]);
        var next = model.forward(prompt, cache).select(1, -1).argmax(-1).unsqueeze(1);
        CopyPrompt(prompt, keys, values, w, config, heads, d);
        int nParts = Enum.GetValues<Part>().Length;
        var perStep = variants.Select(_ => new List<double[]>()).ToArray();
        var ops = new int[variants.Length];
        var maxDiff = new double[variants.Length];
        double[] parts = new double[nParts];
        int opCount = 0;
        long last = 0;
        void Mark(Part p) { long now = Stopwatch.GetTimestamp(); parts[(int)p] += (now - last) / (double)Stopwatch.Frequency; last = now; opCount++; }
        for (int s = 0; s < steps; s++)
        {
            using var scope = NewDisposeScope();
            int vi = s % variants.Length;
            var v = variants[vi];
            (parts, opCount) = (new double[nParts], 0);
            int pos = Prompt + s;
            last = Stopwatch.GetTimestamp();
            var x = w["transformer.wte.weight"].index_select(0, next.view(-1)); Mark(Part.Embedding);       // (B, C)
            x = x.add_(w["transformer.wpe.weight"][pos]); Mark(Part.Embedding);
            for (int l = 0; l < layers; l++)
            {
                string p = $"transformer.h.{l}.";
                var h = F.layer_norm(x, [c], w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps); Mark(Part.Norms);
                var qkv = Project(h, w[p + "attn.c_attn.weight"], w[p + "attn.c_attn.bias"]); Mark(Part.Qkv);  // (B, 3C)
                var split = qkv.view(batch, 3, heads, 1, d); Mark(Part.Rest);                                  // (B, 3, H, 1, D)
                keys[l].narrow(2, pos, 1).copy_(split.select(1, 1)); opCount++;
                values[l].narrow(2, pos, 1).copy_(split.select(1, 2)); opCount++; Mark(Part.KvWrite);
                var (q, k, vv) = (split.select(1, 0), keys[l].narrow(2, 0, pos + 1), values[l].narrow(2, 0, pos + 1));
                var y = v.ManualAttention
                    ? softmax(q.mul(k).sum(-1, keepdim: true).mul_(1.0 / Math.Sqrt(d)), 2).mul(vv).sum(2, keepdim: true)
                    : F.scaled_dot_product_attention(q, k, vv);
                opCount += v.ManualAttention ? 9 : 3; Mark(Part.Sdpa);                                       // (B, H, 1, D)
                x = Project(y.view(batch, c), w[p + "attn.c_proj.weight"], x); Mark(Part.AttnProj);
                x = x.add_(w[p + "attn.c_proj.bias"]); Mark(Part.AttnProj);
                h = F.layer_norm(x, [c], w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps); Mark(Part.Norms);
                h = Project(h, w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"]); Mark(Part.Mlp);
                h = F.gelu(h, TorchSharp.Modules.GELU.Approximate.tanh); Mark(Part.Mlp);
                x = Project(h, w[p + "mlp.c_proj.weight"], x).add_(w[p + "mlp.c_proj.bias"]); opCount++; Mark(Part.Mlp);
            }
            x = F.layer_norm(x, [c], w["transformer.ln_f.weight"], w["transformer.ln_f.bias"], eps); Mark(Part.Norms);
            var wte = w["transformer.wte.weight"];
            var logits = v.Kernel ? DecodeMatmul.TryOutIn(x, wte, null)!
                : v.TransposedHead ? wte.mm(x.t()).t().contiguous()
                : F.linear(x, wte);
            Mark(Part.LmHead);                                                                               // (B, V)
            var token = logits.argmax(-1).unsqueeze(1); opCount++; Mark(Part.Rest);
            perStep[vi].Add(parts);
            ops[vi] = opCount;
            var reference = model.forward(next, cache).select(1, -1);       // untimed; keeps the model's cache in step
            maxDiff[vi] = Math.Max(maxDiff[vi], (reference - logits).abs().max().item<float>());
            next.Dispose();
            next = token.MoveToOuterDisposeScope();

            // y = input · W + addend, W stored (in, out); addend a bias (out) or a residual (B, out).
            Tensor Project(Tensor input, Tensor weight, Tensor addend)
            {
                if (v.Kernel)
                {
                    opCount++;
                    return addend.dim() == 1 ? DecodeMatmul.TryInOut(input, weight, addend)! : DecodeMatmul.TryInOut(input, weight, null)!.add_(addend);
                }
                if (!v.TransposedBlocks) return addmm(addend, input, weight, beta: 1, alpha: 1);
                opCount++;
                var addendT = addend.dim() == 1 ? addend.unsqueeze(1) : addend.t();
                return addmm(addendT, weight.t(), input.t(), beta: 1, alpha: 1).t().contiguous();
            }
        }
        next.Dispose();
        foreach (var t in keys.Concat(values)) t.Dispose();
        return variants.Select((_, i) =>
        {
            var totals = perStep[i].Select(p => p.Sum()).ToArray();
            var partMedians = Enumerable.Range(0, nParts).Select(j => Median(perStep[i].Select(p => p[j]))).ToArray();
            return (Median(totals), partMedians, ops[i], maxDiff[i]);
        }).ToArray();
    }

    private static double Median(IEnumerable<double> xs)
    {
        var sorted = xs.OrderBy(x => x).ToArray();
        return sorted.Length == 0 ? double.NaN : sorted[sorted.Length / 2];
    }

    /// <summary>Fills our cache with the prompt's keys and values, computed by the same ops (no timing).</summary>
    private static void CopyPrompt(Tensor prompt, Tensor[] keys, Tensor[] values, Dictionary<string, Tensor> w,
        ICausalLMConfig config, long heads, long d)
    {
        double eps = ((TianGong.Models.Gpt2.Gpt2Config)config).LayerNormEpsilon;
        using var scope = NewDisposeScope();
        long b = prompt.shape[0], t = prompt.shape[1], c = config.ModelWidth;
        var x = w["transformer.wte.weight"].index_select(0, prompt.view(-1)).view(b, t, c) + w["transformer.wpe.weight"].narrow(0, 0, t);
        for (int l = 0; l < config.LayerCount; l++)
        {
            string p = $"transformer.h.{l}.";
            var h = F.layer_norm(x, [c], w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps);
            var qkv = (h.matmul(w[p + "attn.c_attn.weight"]) + w[p + "attn.c_attn.bias"]).view(b, t, 3, heads, d).permute(2, 0, 3, 1, 4);
            keys[l].narrow(2, 0, t).copy_(qkv[1]);
            values[l].narrow(2, 0, t).copy_(qkv[2]);
            var y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_casual: true).transpose(1, 2).reshape(b, t, c);
            x = x + y.matmul(w[p + "attn.c_proj.weight"]) + w[p + "attn.c_proj.bias"];
            h = F.layer_norm(x, [c], w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps);
            h = F.gelu(h.matmul(w[p + "mlp.c_fc.weight"]) + w[p + "mlp.c_fc.bias"], TorchSharp.Modules.GELU.Approximate.tanh);
            x = x + h.matmul(w[p + "mlp.c_proj.weight"]) + w[p + "mlp.c_proj.bias"];
        }
    }

    /// <summary>Seconds per step of the step's matmuls alone, on the same shapes (the floor of a step): libtorch's, or the decode kernel's.</summary>
    private static double MatmulStep(Dictionary<string, Tensor> w, ICausalLMConfig config, int batch, int steps, bool kernel)
    {
        using var x = randn(batch, config.ModelWidth);
        using var inner = randn(batch, w["transformer.h.0.mlp.c_fc.weight"].shape[1]);
        var clock = Stopwatch.StartNew();
        for (int s = 0; s < steps; s++)
        {
            using var scope = NewDisposeScope();
            for (int l = 0; l < config.LayerCount; l++)
            {
                string p = $"transformer.h.{l}.";
                Project(x, "attn.c_attn");
                Project(x, "attn.c_proj");
                Project(x, "mlp.c_fc");
                Project(inner, "mlp.c_proj");

                void Project(Tensor input, string name) => _ = kernel
                    ? DecodeMatmul.TryInOut(input, w[p + name + ".weight"], w[p + name + ".bias"])!
                    : addmm(w[p + name + ".bias"], input, w[p + name + ".weight"], beta: 1, alpha: 1);
            }
            _ = kernel ? DecodeMatmul.TryOutIn(x, w["transformer.wte.weight"], null)! : F.linear(x, w["transformer.wte.weight"]);
        }
        return clock.Elapsed.TotalSeconds / steps;
    }

    /// <summary>
    /// The small ops of a decode step one by one at the step's shapes, per call and per step (calls × count): GPT-2's
    /// LayerNorm (2 per layer + the final one) and tanh GELU on (B, 4C); Llama's RMSNorm as its five libtorch ops (same
    /// count) and SiLU(gate)·up on (B, I), I = 8C/3 rounded up to 32 (Llama's ratio). Each call follows an untimed
    /// decode-kernel product, as in a step (libtorch's second OpenMP thread asleep, the caches holding a weight). Best
    /// of interleaved rounds, median call of each.
    /// </summary>
    private static void SmallOps(ICausalLMConfig config, int[] batches, int rounds)
    {
        long c = config.ModelWidth, inner = 4 * c, llamaInner = (8 * c / 3 + 31) / 32 * 32;
        int layers = config.LayerCount, norms = 2 * layers + 1;
        Console.WriteLine($"small ops of a decode step ({layers} layers, C {c}; GPT-2 MLP {inner}, Llama MLP {llamaInner}): median µs per call, best of {rounds} rounds; ms per step = calls × µs");
        Console.WriteLine("op | calls per step | batch | libtorch µs | decode kernel µs | libtorch ms per step | decode kernel ms per step");
        foreach (int batch in batches)
        {
            using var scope = NewDisposeScope();
            var x = randn(batch, 1, c);
            var (lnWeight, lnBias, rmsWeight) = (randn(c), randn(c), randn(c));
            var h = randn(batch, 1, inner);
            var (gate, up) = (randn(batch, 1, llamaInner), randn(batch, 1, llamaInner));
            var w = randn(c, 4 * c);
            var ops = new (string Name, int Calls, Func<Tensor> Torch, Func<Tensor?> Kernel)[]
            {
                ("LayerNorm (GPT-2)", norms, () => F.layer_norm(x, [c], lnWeight, lnBias, 1e-5), () => DecodeNorms.TryLayerNorm(x, lnWeight, lnBias, 1e-5)),
                ("RMSNorm, 5 ops (Llama)", norms, () => { using var inner = NewDisposeScope(); return RmsNormOps(x, rmsWeight).MoveToOuterDisposeScope(); },
                    () => DecodeNorms.TryRmsNorm(x, rmsWeight, 1e-5)),
                ("GELU tanh (GPT-2 MLP)", layers, () => F.gelu(h, TorchSharp.Modules.GELU.Approximate.tanh), () => DecodeActivations.TryGeluTanh(h)),
                ("SiLU(gate)·up (Llama MLP)", layers, () => { using var inner = NewDisposeScope(); return (F.silu(gate) * up).MoveToOuterDisposeScope(); },
                    () => DecodeActivations.TrySiluTimes(gate, up)),
            };
            var best = ops.Select(_ => (Torch: double.MaxValue, Kernel: double.MaxValue)).ToArray();
            for (int r = 0; r < rounds; r++)
                for (int i = 0; i < ops.Length; i++)
                {
                    best[i].Torch = Math.Min(best[i].Torch, MedianCall(ops[i].Torch));
                    best[i].Kernel = Math.Min(best[i].Kernel, MedianCall(() => ops[i].Kernel() ?? throw new InvalidOperationException($"{ops[i].Name}: the decode kernel declined")));
                }
            double torchStep = 0, kernelStep = 0;
            for (int i = 0; i < ops.Length; i++)
            {
                Console.WriteLine($"{ops[i].Name} | {ops[i].Calls} | {batch} | {best[i].Torch * 1e6:F1} | {best[i].Kernel * 1e6:F1} | "
                    + $"{best[i].Torch * ops[i].Calls * 1e3:F3} | {best[i].Kernel * ops[i].Calls * 1e3:F3}");
                bool gpt2 = i % 2 == 0;
                if (gpt2 == (config.ModelType == "gpt2")) (torchStep, kernelStep) = (torchStep + best[i].Torch * ops[i].Calls, kernelStep + best[i].Kernel * ops[i].Calls);
            }
            Console.WriteLine($"this model's ({config.ModelType}) norms and activation per step, batch {batch}: libtorch {torchStep * 1e3:F3} ms, decode kernels {kernelStep * 1e3:F3} ms");
            foreach (bool llama in new[] { false, true })
            {
                var (withTorch, withKernels) = PairedStep(llama, layers, c, llama ? llamaInner : inner, batch, 48);
                Console.WriteLine($"{(llama ? "Llama" : "GPT-2")} step, attention over a fixed 40-position cache (products by the decode kernel, random weights), batch {batch}, steps alternating: "
                    + $"small ops by libtorch {withTorch * 1e3:F3} ms, by the decode kernels {withKernels * 1e3:F3} ms (median step)");
            }

            double MedianCall(Func<Tensor> op)
            {
                var times = new List<double>();
                for (int i = 0; i < 200; i++)
                {
                    DecodeMatmul.TryInOut(x.view(batch, c), w, null)?.Dispose();  // as in a step: a product before each small op
                    long start = Stopwatch.GetTimestamp();
                    op().Dispose();
                    if (i >= 20) times.Add((Stopwatch.GetTimestamp() - start) / (double)Stopwatch.Frequency);
                }
                return Median(times);
            }
        }

        // As Layers.RMSNorm computed it before the decode path: fp32 copy, pow, mean, rsqrt(+eps), two products.
        static Tensor RmsNormOps(Tensor x, Tensor weight)
        {
            var x32 = x.to(ScalarType.Float32);
            return weight * (x32 * rsqrt(x32.pow(2).mean([-1L], keepdim: true) + 1e-5)).to(x.dtype);
        }
    }

    /// <summary>
    /// A decode step of random weights with its cache fixed (SDPA of the step's queries over 40 stored positions, no
    /// cache write, no rotary): GPT-2 (LayerNorm, qkv, SDPA, projection, LayerNorm, c_fc, GELU, c_proj per layer; final
    /// LayerNorm; tied head) or Llama (RMSNorm, q, k, v, SDPA, o, RMSNorm, gate, up, SiLU·up, down; final RMSNorm;
    /// head). Products always go through the decode kernel; steps alternate between the small ops by libtorch and by
    /// the decode kernels, so each pair sees the same load. Returns the median step of each.
    /// </summary>
    private static (double Torch, double Kernels) PairedStep(bool llama, int layers, long c, long inner, int batch, int steps)
    {
        using var scope = NewDisposeScope();
        const long vocab = 16384;
        var blocks = Enumerable.Range(0, layers).Select(_ => llama
            ? new[] { randn(c, c), randn(c, c), randn(c, c), randn(c, c), randn(inner, c), randn(inner, c), randn(c, inner) } // (out, in)
            : new[] { randn(c, 3 * c), randn(c, c), randn(c, inner), randn(inner, c) }).ToArray();                            // (in, out)
        var (norm, bias, head) = (ones(c), zeros(c), randn(vocab, c) * 0.02);
        var x0 = randn(batch, 1, c);
        const long heads = 8, positions = 40;
        var (keys, values) = (randn(batch, heads, positions, c / heads), randn(batch, heads, positions, c / heads));
        var times = new[] { new List<double>(), new List<double>() };
        for (int s = 0; s < 2 * steps + 4; s++)
        {
            using var stepScope = NewDisposeScope();
            bool kernels = s % 2 == 1;
            long start = Stopwatch.GetTimestamp();
            var x = x0;
            foreach (var w in blocks)
            {
                if (llama)
                {
                    var h = Norm(x);
                    var q = Out(h, w[0]); _ = Out(h, w[1]); _ = Out(h, w[2]);
                    x = x + Out(Attend(q), w[3]);
                    h = Norm(x);
                    var (gate, up) = (Out(h, w[4]), Out(h, w[5]));
                    x = x + Out(kernels ? DecodeActivations.TrySiluTimes(gate, up)! : F.silu(gate) * up, w[6]);
                }
                else
                {
                    var h = Norm(x);
                    var q = In(h, w[0]).narrow(-1, 0, c);
                    x = x + In(Attend(q), w[1]);
                    h = In(Norm(x), w[2]);
                    x = x + In(kernels ? DecodeActivations.TryGeluTanh(h)! : F.gelu(h, TorchSharp.Modules.GELU.Approximate.tanh), w[3]);
                }
            }
            _ = DecodeMatmul.TryOutIn(Norm(x), head, null)!.argmax(-1);
            if (s >= 4) times[kernels ? 1 : 0].Add((Stopwatch.GetTimestamp() - start) / (double)Stopwatch.Frequency);

            Tensor Norm(Tensor t) => llama
                ? (kernels ? DecodeNorms.TryRmsNorm(t, norm, 1e-5)! : norm * (t * rsqrt(t.pow(2).mean([-1L], keepdim: true) + 1e-5)))
                : (kernels ? DecodeNorms.TryLayerNorm(t, norm, bias, 1e-5)! : F.layer_norm(t, [c], norm, bias, 1e-5));
        }
        return (Median(times[0]), Median(times[1]));

        Tensor Attend(Tensor q) =>                                                          // q (B, 1, C) → (B, 1, C)
            F.scaled_dot_product_attention(q.view(batch, 1, heads, c / heads).transpose(1, 2), keys, values).transpose(1, 2).reshape(batch, 1, c);
        static Tensor In(Tensor t, Tensor w) => DecodeMatmul.TryInOut(t, w, null)!;
        static Tensor Out(Tensor t, Tensor w) => DecodeMatmul.TryOutIn(t, w, null)!;
    }
}
