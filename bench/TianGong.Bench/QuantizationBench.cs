using System.Diagnostics;
using TianGong.Checkpoints;
using TianGong.Compression.Quantization;
using TianGong.Models;
using TianGong.Models.Layers;
using TianGong.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace TianGong.Bench;

/// <summary>
/// Weight-only quantization, side by side in one process: file size and greedy decode tokens/s at batch 1 and 8 for
/// fp32, int8 (per channel) and int4 (group 128) of a pretraining config's model with random weights (speed does not
/// depend on what the weights are), and one linear layer's time per call at one row: fp32 matmul, our AVX-512 kernel,
/// and dequantize-then-matmul (what libtorch alone would do).
/// </summary>
internal static class QuantizationBench
{
    public static int Run(string[] args)
    {
        string configPath = args.Length > 0 ? args[0] : "configs/poetry-small.json";
        int steps = args.Length > 1 ? int.Parse(args[1]) : 32;
        int vocab = args.Length > 2 ? int.Parse(args[2]) : 16384;
        var config = PretrainConfig.Load(configPath).Model.WithTokenizer(vocab, 0, 0);
        var root = Path.Combine(Path.GetTempPath(), "tiangong-bench-quantization");
        var fp32Dir = Path.Combine(root, "fp32");
        manual_seed(0);
        (long In, long Out) widest;
        using (var model = ModelConfigs.CreateCausalLM(config))
        {
            model.InitializeWeights();
            ModelFolder.Save(fp32Dir, model, config, null);
            var modules = model.named_modules().ToDictionary(m => m.name, m => m.module);
            widest = LayerReplacement.LinearLayerNames(model).Where(n => !n.EndsWith("lm_head"))
                .Select(n => LinearLayers.Describe(modules[n])!).Select(p => (p.InFeatures, p.OutFeatures)).MaxBy(p => p.InFeatures * p.OutFeatures);
            Console.WriteLine($"model: {configPath} ({config.ModelType}, random weights), {model.ParameterCount() / 1e6:F2}M parameters, vocab {vocab}; "
                + $"torch threads {get_num_threads()}, {Environment.ProcessorCount} cores; {steps} decode steps after an 8-token prompt; best of 3");
        }
        Console.WriteLine("variant | file MB | batch 1 tok/s | batch 8 tok/s");
        foreach (var (name, quantization) in Variants)
        {
            var dir = VariantFolder(fp32Dir, root, quantization);
            using var loaded = ModelFolder.Load(dir);
            var lm = loaded.AsCausalLM("bench");
            double mb = new FileInfo(Path.Combine(dir, ModelFolder.WeightsFile)).Length / 1e6;
            Console.WriteLine($"{name} | {mb:F1} | {Decode(lm, 1, steps):F1} | {Decode(lm, 8, steps):F1}");
        }
        LayerTimes(widest.In, widest.Out);
        return 0;
    }

    /// <summary>Greedy decode tokens/s (all sequences together), best of three runs.</summary>
    /// <summary>The weight formats the decode benchmarks compare: fp32, int8 per channel, int4 in groups of 128 (round to nearest).</summary>
    internal static readonly (string Name, GptqConfig? Quantization)[] Variants =
    [
        ("fp32", null), ("int8 (per channel)", new GptqConfig(8, -1, true)), ("int4 (group 128)", new GptqConfig(4, 128, true)),
    ];

    /// <summary>The model folder of one variant: <paramref name="fp32Dir"/> itself, or its quantized copy written under <paramref name="root"/>.</summary>
    internal static string VariantFolder(string fp32Dir, string root, GptqConfig? quantization)
    {
        if (quantization is null) return fp32Dir;
        var dir = Path.Combine(root, $"int{quantization.Bits}");
        using var source = ModelFolder.Load(fp32Dir);
        QuantizedModel.QuantizeRtn(source.Module, quantization);
        QuantizedModel.Save(dir, source.Module, source.Config, quantization);
        return dir;
    }

    private static double Decode(CausalLM model, int batch, int steps)
    {
        using var prompt = randint(0, 100, [batch, 8]);
        return GreedyDecode.BestOfThree(model, prompt, steps);
    }

    /// <summary>Microseconds per call of one (in → out) linear layer at one row, best of several hundred calls.</summary>
    private static void LayerTimes(long inFeatures, long outFeatures)
    {
        manual_seed(1);
        using var linear = nn.Linear(inFeatures, outFeatures, hasBias: false);
        var parts = LinearLayers.Describe(linear)!;
        using var int8 = QuantizedLinear.Rtn(parts, new GptqConfig(8, -1, true));
        using var int4 = QuantizedLinear.Rtn(parts, new GptqConfig(4, 128, true));
        using var x = randn(1, inFeatures);
        using var _ = no_grad();
        Console.WriteLine($"one {inFeatures}→{outFeatures} linear layer, 1 row: µs per call (best of 5 rounds)");
        Console.WriteLine($"fp32 F.linear | {Time(() => linear.forward(x)):F1}");
        Console.WriteLine($"int8 AVX-512 kernel | {Time(() => int8.forward(x)):F1}");
        Console.WriteLine($"int4 AVX-512 kernel | {Time(() => int4.forward(x)):F1}");
        Console.WriteLine($"int8 dequantize (libtorch ops) + matmul | {Time(() => x.matmul(int8.DequantizedWeight(ScalarType.Float32)), calls: 5):F1}");
        using var rows = randn(64, inFeatures);
        Console.WriteLine($"64 rows: fp32 F.linear | {Time(() => linear.forward(rows), calls: 20):F1}");
        Console.WriteLine($"64 rows: int8 dequantize (ours) + matmul | {Time(() => int8.forward(rows), calls: 20):F1}");
    }

    private static double Time(Func<Tensor> call, int calls = 200)
    {
        double best = double.MaxValue;
        for (int round = 0; round < 5; round++)
        {
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < calls; i++)
            {
                using var scope = NewDisposeScope();
                call();
            }
            best = Math.Min(best, clock.Elapsed.TotalMicroseconds / calls);
        }
        return best;
    }
}
