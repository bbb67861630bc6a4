using System.Diagnostics;
using System.Runtime.InteropServices;
using TianGong.Models;
using TianGong.Parallelism.Communication;
using TianGong.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace TianGong.Bench;

/// <summary>
/// The GPU benchmark of issue 12, run by bench/gpu.sh on a build with -p:TorchBackend=cuda: the GPU's measured bf16
/// matmul peak, training tokens/s of a config's model (default configs/poetry-gpu.json: GPT-2 1024×24, bf16) with MFU
/// against the measured peak and against the datasheet peak given as an argument, and KV-cache decode tokens/s at batch
/// 1 and 16, all in one process. <c>device=cpu</c> runs the same code on the CPU (a dry run of the script with a tiny config).
/// Also <c>gpu-nccl-check</c>, one rank of a job under mpirun: <see cref="CollectiveCheck"/> on this rank's GPU, then the all-reduce bus bandwidth.
/// First run on an H200 (2026-11-27) through bench/gpu-with-pytorch.sh; docs/benchmarks.md (GPU) has the figures.
/// </summary>
internal static class GpuBench
{
    public static int Run(string[] args)
    {
        var options = args.Select(a => a.Split('=', 2)).ToDictionary(p => p[0], p => p.Length > 1 ? p[1] : "");
        string[] known = ["config", "steps", "datasheet-tflops", "device", "batch", "dtype", "parts"];
        if (options.Keys.FirstOrDefault(k => !known.Contains(k)) is { } unknown)
        {
            Console.Error.WriteLine($"error: gpu: unknown option '{unknown}'; expected key=value with a key of {string.Join(", ", known)}");
            return 2;
        }
        string Option(string key, string fallback) => options.GetValueOrDefault(key, fallback);
        var configPath = Option("config", "configs/poetry-gpu.json");
        int steps = int.Parse(Option("steps", "20"));
        double datasheetTflops = double.Parse(Option("datasheet-tflops", "0"), System.Globalization.CultureInfo.InvariantCulture);
        var device = new Device(Option("device", "cuda"));
        // parts=peak,training,decode (the default: all three); a later lease can rerun one part alone.
        var parts = Option("parts", "peak,training,decode").Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (parts.FirstOrDefault(p => p is not ("peak" or "training" or "decode")) is { } badPart)
        {
            Console.Error.WriteLine($"error: gpu: unknown part '{badPart}'; expected a comma-separated list of peak, training, decode");
            return 2;
        }
        try
        {
            CudaDevices.Require(device); // one line, before any work, on a machine without CUDA
        }
        catch (TianGongException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }

        var config = PretrainConfig.Load(configPath);
        var t = config.Training;
        var dtype = options.TryGetValue("dtype", out var d) ? (d == "bfloat16" ? ScalarType.BFloat16 : ScalarType.Float32) : t.ScalarType;
        var modelConfig = config.Model.WithTokenizer(config.Tokenizer.VocabSize, 0, 0);
        Console.WriteLine($"load average at start: {ProfileBench.LoadAverage()}");
        Console.WriteLine($"device: {device}{(device.type == DeviceType.CUDA ? $" ({cuda.device_count()} GPU(s) visible)" : $", {Environment.ProcessorCount} cores")}");

        // Each part runs on its own: on a first run on a new machine, a failure in one (an untried device path) is printed
        // in full and the next part still runs, so one short lease reports everything that works.
        int failures = 0;
        void Part(string part, string name, Action body)
        {
            if (!parts.Contains(part)) return;
            try { body(); }
            catch (Exception e) { failures++; Console.WriteLine($"{name}: FAILED: {e}"); }
        }

        double peak = 0;
        Part("peak", "matmul peak", () =>
        {
            (peak, var sizes) = MatmulPeakTflops(device, dtype);
            Console.WriteLine($"{dtype} matmul peak (measured, best of n = {sizes}): {Tflops(peak)} TFLOP/s" +
                              (datasheetTflops > 0 ? $"; datasheet {Tflops(datasheetTflops)} TFLOP/s (measured/datasheet {peak / datasheetTflops:P1})" : ""));
        });

        manual_seed(0);
        using var model = ModelConfigs.CreateCausalLM(modelConfig);
        model.InitializeWeights();
        if (dtype != ScalarType.Float32) model.to(dtype);
        if (device.type != DeviceType.CPU) model.to(device);
        long n = model.ParameterCount();
        // PaLM's estimate: 6N per token for the matmuls of forward+backward, plus attention's 12·L·C·T.
        double flopsPerToken = 6.0 * n + 12.0 * modelConfig.LayerCount * modelConfig.ModelWidth * t.SeqLen;
        int batch = options.TryGetValue("batch", out var b) ? int.Parse(b) : t.BatchSize;

        Part("training", "training", () =>
        {
            using var optimizer = new AdamW(model.named_parameters(), new AdamWOptions(t.Beta1, t.Beta2, t.Eps, t.WeightDecay), Trainer.NoDecayNames(model));
            // The batch that fits: the config's (filling an 80 GB GPU), halved while the first step runs out of memory.
            double secondsPerStep;
            while (true)
            {
                try
                {
                    secondsPerStep = TimeTraining(model, optimizer, device, batch, t.SeqLen, t.GradAccum, t.GradClip, steps, modelConfig.VocabSize);
                    if (device.type == DeviceType.CUDA)
                    {
                        // Side by side, after: the trainer as it was (host reads after backward), then as it is again.
                        double early = TimeTraining(model, optimizer, device, batch, t.SeqLen, t.GradAccum, t.GradClip, steps, modelConfig.VocabSize, readsEarly: true);
                        double again = TimeTraining(model, optimizer, device, batch, t.SeqLen, t.GradAccum, t.GradClip, steps, modelConfig.VocabSize);
                        Console.WriteLine($"training step: {secondsPerStep:F3} s, {again:F3} s (reads on the device) vs {early:F3} s (the loss and the clipping norm read on the host after backward)");
                        secondsPerStep = Math.Min(secondsPerStep, again); // the figure below: the better of the trainer's two runs
                    }
                    break;
                }
                catch (ExternalException e) when (e.Message.Contains("out of memory", StringComparison.OrdinalIgnoreCase) && batch > 1)
                {
                    optimizer.ZeroGrad();
                    GC.Collect();
                    GC.WaitForPendingFinalizers();
                    Console.WriteLine($"batch {batch} does not fit ({e.Message.Split('\n')[0]}); trying {batch / 2}");
                    batch /= 2;
                }
            }
            double tokensPerSecond = (double)batch * t.SeqLen * t.GradAccum / secondsPerStep;
            double achieved = tokensPerSecond * flopsPerToken / 1e12;
            Console.WriteLine($"model: {configPath} ({modelConfig.ModelType}), {n / 1e6:F1}M parameters, {dtype}, batch {batch}x{t.SeqLen}, grad_accum {t.GradAccum}, {steps} timed steps after 2 warm-up steps");
            Console.WriteLine($"training: {tokensPerSecond:N0} tokens/s ({secondsPerStep:F3} s/step), {Tflops(achieved)} TFLOP/s of model FLOPs; " +
                              (peak > 0 ? $"MFU {achieved / peak:P1} of the measured peak" : "no measured peak") +
                              (datasheetTflops > 0 ? $", {achieved / datasheetTflops:P1} of the datasheet peak" : ""));
        });

        Part("decode", "decode agreement", () => Console.WriteLine(DecodeAgreement(model, device, steps: 32)));
        foreach (int decodeBatch in new[] { 1, 16 })
        {
            Part("decode", $"decode batch {decodeBatch}", () =>
            {
                var (tps, ms, enqueueMs) = DecodeSpeed(model, device, decodeBatch, promptLength: 16, newTokens: 128);
                Console.WriteLine($"decode batch {decodeBatch}: {tps:N0} tokens/s ({ms:F2} ms per step, KV cache, greedy; " +
                                  $"the host queued a step in {enqueueMs:F2} ms)");
            });
        }
        return failures == 0 ? 0 : 1;
    }

    /// <summary>One rank of <c>mpirun -n N ... gpu-nccl-check</c>: NCCL on GPU (local rank), every call checked, bus bandwidth.</summary>
    public static int RunNcclCheck()
    {
        using var world = MpiCommunicator.InitWorld(TimeSpan.FromSeconds(120));
        string prefix = $"[rank {world.Rank}] ";
        try
        {
            var device = CudaDevices.RankDevice(new Device(DeviceType.CUDA), CudaDevices.LocalRank() ?? world.Rank);
            using var nccl = NcclCommunicator.Create(world, device, TimeSpan.FromSeconds(120));
            Console.WriteLine(prefix + nccl.Describe());
            foreach (var line in CollectiveCheck.Run(nccl, device)) Console.WriteLine(prefix + line);
            Console.WriteLine(prefix + CollectiveCheck.BusBandwidth(nccl, device, 256L << 20, ScalarType.BFloat16));
            Console.WriteLine($"{prefix}all NCCL calls correct on rank {nccl.Rank} of {nccl.Size}");
            return 0;
        }
        catch (TianGongException e)
        {
            Console.Error.WriteLine($"{prefix}error: {e.Message}");
            world.Abort(1);
            return 1;
        }
    }

    /// <summary>Seconds per optimizer step (2 warm-up steps, then <paramref name="steps"/> timed), on random tokens.</summary>
    /// <param name="readsEarly">
    /// The trainer before it kept the loss on the device: the loss read right after backward and libtorch's
    /// clip_grad_norm_ (which returns the norm to the host); false: the trainer now (GradientClipping, the loss read
    /// once the update is queued).
    /// </param>
    private static double TimeTraining(CausalLM model, AdamW optimizer, Device device, int batch, int seqLen, int gradAccum, double gradClip, int steps, int vocab, bool readsEarly = false)
    {
        using var data = randint(0, vocab, [batch, seqLen + 1], dtype: ScalarType.Int64, device: device);
        using var input = data[.., ..seqLen].contiguous();
        using var target = data[.., 1..].contiguous();
        void Step()
        {
            using var scope = NewDisposeScope();
            var losses = new List<Tensor>();
            for (int micro = 0; micro < gradAccum; micro++)
            {
                var loss = LanguageModeling.NextTokenLoss(model, new TokenBatch(input, target)).Loss / gradAccum; // the trainer's loss
                loss.backward();
                losses.Add(loss.detach());
                if (readsEarly) loss.item<float>();
            }
            var trained = optimizer.Parameters.ToList();
            if (readsEarly) nn.utils.clip_grad_norm_(trained, gradClip);
            else GradientClipping.ClipGlobalNorm(trained, gradClip);
            optimizer.Step(1e-4);
            optimizer.ZeroGrad();
            if (!readsEarly) foreach (var loss in losses) loss.item<float>();
        }
        Step();
        Step();
        Synchronize(device);
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < steps; i++) Step();
        Synchronize(device);
        return clock.Elapsed.TotalSeconds / steps;
    }

    /// <summary>Best TFLOP/s of square matmuls in <paramref name="dtype"/> (4096, 8192, 16384 on a GPU; 1024 on the CPU).</summary>
    private static (double Tflops, string Sizes) MatmulPeakTflops(Device device, ScalarType dtype)
    {
        double best = 0;
        int[] sizes = device.type == DeviceType.CUDA ? [4096, 8192, 16384] : [1024];
        foreach (int size in sizes)
        {
            using var a = randn([size, size], dtype, device);
            using var b = randn([size, size], dtype, device);
            a.matmul(b).Dispose();
            Synchronize(device);
            int reps = device.type == DeviceType.CUDA ? Math.Max(3, (int)(2e13 / (2.0 * size * size * size))) : 3;
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < reps; i++) a.matmul(b).Dispose();
            Synchronize(device);
            best = Math.Max(best, reps * 2.0 * size * size * size / clock.Elapsed.TotalSeconds / 1e12);
        }
        return (best, string.Join(", ", sizes));
    }

    private static string Tflops(double value) => value.ToString(value < 10 ? "F3" : "F1", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Greedy decoding of <paramref name="newTokens"/> tokens for <paramref name="batch"/> sequences after a prefill; generated tokens/s and ms per step.</summary>
    /// <remarks>
    /// Also the host's time to queue a step: the clock read just before the final wait. Near the step time, the host is
    /// the limit (launch overhead, or a step that waits on the device); far under it, the GPU is.
    /// </remarks>
    private static (double TokensPerSecond, double MsPerStep, double EnqueueMsPerStep) DecodeSpeed(CausalLM model, Device device, int batch, int promptLength, int newTokens)
    {
        model.eval();
        using var prompt = randint(0, model.Config.VocabSize, [batch, promptLength], dtype: ScalarType.Int64, device: device);
        Stopwatch? queued = null;
        double enqueueSeconds = 0;
        void SynchronizeAndMark()
        {
            if (queued is null) { Synchronize(device); queued = Stopwatch.StartNew(); return; } // after the prefill
            enqueueSeconds = queued.Elapsed.TotalSeconds;                                        // after the last step is queued
            Synchronize(device);
        }
        var (tokensPerSecond, msPerStep) = GreedyDecode.Time(model, prompt, newTokens - 1, SynchronizeAndMark);
        model.train();
        return (tokensPerSecond, msPerStep, enqueueSeconds * 1000 / (newTokens - 1));
    }

    /// <summary>
    /// Greedy decoding with the KV cache (one query a step: <c>Attention.OneQuery</c> on a GPU) against one forward pass
    /// without a cache over the same tokens (libtorch's causal attention): the largest logit difference relative to
    /// the largest logit, and how many of the steps' greedy tokens the full pass picks too.
    /// </summary>
    private static string DecodeAgreement(CausalLM model, Device device, int steps)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        model.eval();
        const int batch = 2, promptLength = 16;
        var prompt = randint(0, model.Config.VocabSize, [batch, promptLength], dtype: ScalarType.Int64, device: device);
        using var cache = model.CreateCache(batch, promptLength + steps + 1);
        var logits = new List<Tensor> { model.forward(prompt, cache)[.., -1] };       // (B, V) each
        var tokens = new List<Tensor>();
        for (int s = 0; s < steps; s++)
        {
            tokens.Add(logits[^1].argmax(-1, keepdim: true));
            logits.Add(model.forward(tokens[^1], cache)[.., -1]);
        }
        var generated = cat(tokens, 1);                                                     // (B, steps)
        var full = model.forward(cat([prompt, generated], 1))[.., (promptLength - 1)..].to(ScalarType.Float32); // (B, steps + 1, V)
        var cached = stack(logits, 1).to(ScalarType.Float32);
        double relative = ((full - cached).abs().max() / full.abs().max()).item<float>();
        long agreeing = full[.., ..^1].argmax(-1).eq(generated).sum().item<long>();
        model.train();
        return $"decode agreement: cached steps vs one uncached pass, max |logit diff| / max |logit| {relative:E2}; " +
               $"greedy tokens the same in {agreeing} of {batch * steps} ({model.Config.VocabSize}-token vocabulary, {model.parameters().First().dtype})";
    }

    /// <summary>GPU work is queued: wait for it before reading the clock.</summary>
    private static void Synchronize(Device device)
    {
        if (device.type == DeviceType.CUDA) cuda.synchronize(device);
    }
}
