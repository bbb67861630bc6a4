using System.Diagnostics;
using System.Text.Json.Nodes;
using TianGong.Inference;
using TianGong.Models;
using TianGong.Training;
using static TorchSharp.torch;

namespace TianGong.Bench;

/// <summary>
/// Pretraining and decoding speed of a config's model (default configs/poetry-small.json) on random tokens:
/// training tokens/s and model FLOPs utilisation against this machine's measured fp32 matmul peak, and
/// KV-cache decode tokens/s at batch 1 and 8. All figures come from one process, side by side.
/// </summary>
public static class TrainingBench
{
    public static int Run(string[] args)
    {
        var configPath = args.FirstOrDefault() ?? "configs/poetry-small.json";
        int steps = args.Length > 1 ? int.Parse(args[1]) : 5;
        int threads = args.Length > 2 ? int.Parse(args[2]) : Environment.ProcessorCount;
        set_num_threads(threads);
        var config = PretrainConfig.Load(configPath);
        var t = config.Training;
        var modelConfig = config.Model.WithTokenizer(config.Tokenizer.VocabSize, 0, 0);

        double peak = ProfileBench.MatmulPeakGflops();
        Console.WriteLine($"machine: {Environment.ProcessorCount} cores, torch threads {threads}; fp32 matmul peak (2048^3): {peak:F1} GFLOP/s");

        manual_seed(0);
        using var model = ModelConfigs.CreateCausalLM(modelConfig);
        model.InitializeWeights();
        long n = model.ParameterCount();
        // PaLM's estimate: 6N per token for the matmuls of forward+backward, plus attention's 12·L·C·T.
        double flopsPerToken = 6.0 * n + 12.0 * modelConfig.LayerCount * modelConfig.ModelWidth * t.SeqLen;
        Console.WriteLine($"model: {configPath} ({modelConfig.ModelType}), {n / 1e6:F2}M parameters, batch {t.BatchSize}x{t.SeqLen}, grad_accum {t.GradAccum}");

        using var optimizer = new AdamW(model.named_parameters(), new AdamWOptions(t.Beta1, t.Beta2, t.Eps, t.WeightDecay), Trainer.NoDecayNames(model));
        var data = randint(0, modelConfig.VocabSize, [t.BatchSize, t.SeqLen + 1], dtype: ScalarType.Int64);
        void Step()
        {
            for (int micro = 0; micro < t.GradAccum; micro++)
            {
                using var scope = NewDisposeScope();
                var loss = LanguageModeling.NextTokenLoss(model, new TokenBatch(data[.., ..t.SeqLen], data[.., 1..])).Loss / t.GradAccum; // the trainer's loss
                loss.backward();
            }
            nn.utils.clip_grad_norm_(optimizer.Parameters, t.GradClip);
            optimizer.Step(1e-4);
            optimizer.ZeroGrad();
        }
        Step();
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < steps; i++) Step();
        double seconds = clock.Elapsed.TotalSeconds;
        double tokensPerSecond = (double)steps * t.BatchSize * t.SeqLen * t.GradAccum / seconds;
        double mfu = tokensPerSecond * flopsPerToken / (peak * 1e9);
        Console.WriteLine($"training: {tokensPerSecond:N0} tokens/s ({seconds / steps:F2} s/step), MFU {mfu:P1} of the measured matmul peak");

        foreach (int batch in new[] { 1, 8 })
        {
            var (tps, ms) = DecodeSpeed(model, batch, promptLength: 16, newTokens: 128);
            Console.WriteLine($"decode batch {batch}: {tps:N0} tokens/s ({ms:F1} ms per step, KV cache)");
        }
        return 0;
    }

    /// <summary>Greedy decoding of <paramref name="newTokens"/> tokens for <paramref name="batch"/> sequences after a prefill; returns generated tokens/s and ms per decode step.</summary>
    private static (double TokensPerSecond, double MsPerStep) DecodeSpeed(CausalLM model, int batch, int promptLength, int newTokens)
    {
        model.eval();
        using var prompt = randint(0, model.Config.VocabSize, [batch, promptLength], dtype: ScalarType.Int64);
        var speed = GreedyDecode.Time(model, prompt, newTokens - 1);
        model.train();
        return speed;
    }
}
