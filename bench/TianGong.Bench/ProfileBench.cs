using System.Diagnostics;
using TianGong.Models;
using TianGong.Models.Layers;
using TianGong.Training;
using TorchSharp.Modules;
using AdamW = TianGong.Training.AdamW;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Bench;

/// <summary>
/// Where a training step's time goes, before and after the chunked LM-head loss and the fused AdamW, in one process.
/// First whole optimizer steps of both paths side by side (phases timed inside the step: forward + loss, backward, clip,
/// AdamW, zero_grad); then each kind of work timed alone on the model's own shapes (TorchSharp has no profiler binding,
/// and libtorch runs synchronously on the CPU, so a stopwatch around the ops is exact): the block matmuls (forward and
/// both backward products), the LM head's three matmuls, cross-entropy over the full logits (without its matmul),
/// attention (SDPA, causal), norms, activations, and AdamW (libtorch ops vs one fused pass). The residual of the
/// measured step is what the isolated parts do not cover (residual adds, embeddings, dropout, copies, allocation).
/// </summary>
internal static class ProfileBench
{
    public static int Run(string[] args)
    {
        var configPath = args.Length > 0 ? args[0] : "configs/poetry-small.json";
        int steps = args.Length > 1 ? int.Parse(args[1]) : 2;
        int threads = args.Length > 2 ? int.Parse(args[2]) : Environment.ProcessorCount;
        set_num_threads(threads);
        var config = PretrainConfig.Load(configPath);
        var t = config.Training;
        int batch = args.Length > 3 ? int.Parse(args[3]) : t.BatchSize;
        var modelConfig = config.Model.WithTokenizer(config.Tokenizer.VocabSize, 0, 0);
        Console.WriteLine($"load average at start: {LoadAverage()}");
        double peak = MatmulPeakGflops();
        manual_seed(0);
        using var model = ModelConfigs.CreateCausalLM(modelConfig);
        model.InitializeWeights();
        long n = model.ParameterCount();
        double flopsPerToken = 6.0 * n + 12.0 * modelConfig.LayerCount * modelConfig.ModelWidth * t.SeqLen;
        long tokens = (long)batch * t.SeqLen;
        Console.WriteLine($"machine: {Environment.ProcessorCount} cores, torch threads {threads}; fp32 matmul peak (2048^3): {peak:F1} GFLOP/s");
        Console.WriteLine($"model: {configPath} ({modelConfig.ModelType}), {n / 1e6:F2}M parameters, one micro-batch of {batch}x{t.SeqLen}, best of {steps} rounds per path");

        var noDecay = Trainer.NoDecayNames(model);
        using var plainAdam = new AdamW(model.named_parameters(), new AdamWOptions(t.Beta1, t.Beta2, t.Eps, t.WeightDecay, Fused: false), noDecay);
        using var fusedAdam = new AdamW(model.named_parameters(), new AdamWOptions(t.Beta1, t.Beta2, t.Eps, t.WeightDecay), noDecay);
        var data = randint(0, modelConfig.VocabSize, [batch, t.SeqLen + 1], dtype: ScalarType.Int64);
        var tokenBatch = new TokenBatch(data[.., ..t.SeqLen], data[.., 1..]);
        LossFunction<TokenBatch> plainLoss = (m, b) => new LossRecord(LanguageModeling.Loss(((CausalLM)m).forward(b.Input), b.Target));

        // Both paths alternate, one warm-up step each, then the best of `steps` rounds: load that drifts hits both alike.
        Step(plainLoss, plainAdam);
        Step(LanguageModeling.NextTokenLoss, fusedAdam);
        double[]? bestBefore = null, bestAfter = null;
        for (int round = 0; round < steps; round++)
        {
            var b = Step(plainLoss, plainAdam);
            if (bestBefore is null || b.Sum() < bestBefore.Sum()) bestBefore = b;
            var a = Step(LanguageModeling.NextTokenLoss, fusedAdam);
            if (bestAfter is null || a.Sum() < bestAfter.Sum()) bestAfter = a;
        }
        Console.WriteLine("path (best of the rounds) | tokens/s | MFU | s/step | forward+loss | backward | clip | AdamW | zero_grad");
        var before = Report("before (full logits + F.cross_entropy, AdamW as libtorch ops)", bestBefore!);
        var after = Report("after (chunked LM head + CE, fused AdamW)", bestAfter!);
        Console.WriteLine($"speed-up of the step, after vs before: {before / after:F2}x");

        Parts(model, modelConfig, batch, t.SeqLen, plainAdam, fusedAdam, after, peak);
        Console.WriteLine($"load average at end: {LoadAverage()}");
        return 0;

        double Report(string name, double[] phases)
        {
            double seconds = phases.Sum();
            double tps = tokens / seconds;
            Console.WriteLine($"{name} | {tps:N0} | {tps * flopsPerToken / (peak * 1e9):P1} | {seconds:F2} | "
                + string.Join(" | ", phases.Select(x => $"{x:F3} s")));
            return seconds;
        }

        double[] Step(LossFunction<TokenBatch> loss, AdamW optimizer)
        {
            var phases = new double[5];
            var clock = Stopwatch.StartNew();
            using (var scope = NewDisposeScope())
            {
                var l = loss(model, tokenBatch).Loss;
                phases[0] = Lap(clock);
                l.backward();
                phases[1] = Lap(clock);
            }
            nn.utils.clip_grad_norm_(optimizer.Parameters, t.GradClip);
            phases[2] = Lap(clock);
            optimizer.Step(1e-4);
            phases[3] = Lap(clock);
            optimizer.ZeroGrad();
            phases[4] = Lap(clock);
            return phases;
        }
    }

    private static double Lap(Stopwatch clock)
    {
        double s = clock.Elapsed.TotalSeconds;
        clock.Restart();
        return s;
    }

    /// <summary>Each kind of work alone, on the shapes of one micro-batch of this model, forward and backward.</summary>
    private static void Parts(CausalLM model, ICausalLMConfig config, int batch, int seqLen, AdamW plainAdam, AdamW fusedAdam, double stepSeconds, double peak)
    {
        long rows = (long)batch * seqLen, width = config.ModelWidth, vocab = config.VocabSize;
        int layers = config.LayerCount;
        // Every projection but the head, whichever class holds it (Conv1D, DecodeLinear, a wrapper).
        var linearShapes = model.named_modules().Where(m => !m.name.EndsWith("lm_head")).Select(m => LinearLayers.Describe(m.module))
            .OfType<LinearParts>().Select(p => (In: p.InFeatures, Out: p.OutFeatures)).ToList();
        int heads = (int)Math.Max(1, width / 64);
        var parts = new List<(string Name, double Seconds)>();
        using (var _ = no_grad())
        {
            var inputs = linearShapes.Select(s => (X: randn(rows, s.In), W: randn(s.Out, s.In))).ToList();
            parts.Add(($"block matmuls ({linearShapes.Count} weights, forward + 2 backward products)", Time(() =>
            {
                foreach (var (x, w) in inputs)
                {
                    using var scope = NewDisposeScope();
                    var y = x.mm(w.t());
                    y.mm(w);
                    y.t().mm(x);
                }
            })));
            var hx = randn(rows, width);
            var hw = randn(vocab, width);
            parts.Add(("LM head matmuls (forward + 2 backward products)", Time(() =>
            {
                using var scope = NewDisposeScope();
                var y = hx.mm(hw.t());
                y.mm(hw);
                y.t().mm(hx);
            })));
        }
        var logits = randn(rows, vocab).requires_grad_(true);
        var target = randint(0, vocab, [rows], dtype: ScalarType.Int64);
        parts.Add(("cross-entropy over the full logits, forward + backward (no matmul)", Time(() =>
        {
            using var scope = NewDisposeScope();
            F.cross_entropy(logits, target).backward();
        })));
        var hidden = randn(rows, width).requires_grad_(true);
        var head = randn(vocab, width).requires_grad_(true);
        parts.Add(("chunked LM head + cross-entropy, forward + backward (matmuls included)", Time(() =>
        {
            using var scope = NewDisposeScope();
            ChunkedLmHeadLoss.Loss(hidden, head, target).backward();
        })));
        parts.Add(("plain LM head + cross-entropy, forward + backward (matmuls included)", Time(() =>
        {
            using var scope = NewDisposeScope();
            F.cross_entropy(F.linear(hidden, head), target).backward();
        })));
        var q = randn(batch, heads, seqLen, width / heads).requires_grad_(true);
        var k = randn(batch, heads, seqLen, width / heads).requires_grad_(true);
        var v = randn(batch, heads, seqLen, width / heads).requires_grad_(true);
        parts.Add(($"attention, SDPA causal ({layers} layers × {heads} heads), forward + backward", Time(() =>
        {
            for (int l = 0; l < layers; l++)
            {
                using var scope = NewDisposeScope();
                F.scaled_dot_product_attention(q, k, v, is_casual: true).sum().backward();
            }
        })));
        var normed = randn(rows, width).requires_grad_(true);
        var gamma = ones(width).requires_grad_(true);
        var beta = zeros(width).requires_grad_(true);
        parts.Add(($"layer norms ({2 * layers + 1}), forward + backward", Time(() =>
        {
            for (int l = 0; l < 2 * layers + 1; l++)
            {
                using var scope = NewDisposeScope();
                F.layer_norm(normed, [width], gamma, beta).sum().backward();
            }
        })));
        var wide = randn(rows, 4 * width).requires_grad_(true);
        parts.Add(($"activations (GELU on {layers} × rows × 4·width), forward + backward", Time(() =>
        {
            for (int l = 0; l < layers; l++)
            {
                using var scope = NewDisposeScope();
                F.gelu(wide).sum().backward();
            }
        })));
        parts.Add(("AdamW, libtorch ops (one step)", Time(() => plainAdam.Step(1e-4))));
        parts.Add(("AdamW, fused (one step)", Time(() => fusedAdam.Step(1e-4))));
        Console.WriteLine("part (timed alone, best of 3) | seconds | share of the measured 'after' step");
        foreach (var (name, s) in parts) Console.WriteLine($"{name} | {s:F3} | {s / stepSeconds:P1}");
        double matmulFlops = 6.0 * rows * (linearShapes.Sum(s => s.In * s.Out) + vocab * width);
        Console.WriteLine($"matmul FLOPs of one micro-batch: {matmulFlops / 1e9:F1} G, {matmulFlops / 1e9 / peak:F3} s at the measured peak");
    }

    /// <summary>Best of three runs of an action, in seconds, after one warm-up run.</summary>
    private static double Time(Action action)
    {
        action();
        double best = double.MaxValue;
        for (int i = 0; i < 3; i++)
        {
            var clock = Stopwatch.StartNew();
            action();
            best = Math.Min(best, clock.Elapsed.TotalSeconds);
        }
        return best;
    }

    internal static double MatmulPeakGflops()
    {
        using var a = randn(2048, 2048);
        using var b = randn(2048, 2048);
        a.matmul(b).Dispose();
        var clock = Stopwatch.StartNew();
        const int reps = 5;
        for (int i = 0; i < reps; i++) a.matmul(b).Dispose();
        return reps * 2.0 * 2048 * 2048 * 2048 / clock.Elapsed.TotalSeconds / 1e9;
    }

    internal static string LoadAverage() => string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3));
}
