using System.Diagnostics;
using TianGong.Checkpoints;
using TianGong.Compression.Quantization;
using TianGong.Export.Onnx;
using TianGong.Models;
using TianGong.Training;
using static TorchSharp.torch;

namespace TianGong.Bench;

/// <summary>
/// Batch-1 greedy decode tokens/s, side by side in one process, of one model (a pretraining config's, random weights:
/// speed does not depend on what they are) run five ways: ONNX Runtime on the exported fp32 graph and on the int4
/// MatMulNBits graph (<c>export onnx --bits 4</c>), and ours (TorchSharp) in fp32, int8 (per channel) and int4
/// (group 32, asymmetric: the same integers MatMulNBits holds). ONNX Runtime gets as many intra-op threads as torch.
/// Args: [config] [steps=32] [vocab=16384] [rounds=5].
/// </summary>
internal static class OnnxBench
{
    public static int Run(string[] args)
    {
        string configPath = args.Length > 0 ? args[0] : "configs/poetry-small.json";
        int steps = args.Length > 1 ? int.Parse(args[1]) : 32;
        int vocab = args.Length > 2 ? int.Parse(args[2]) : 16384;
        int rounds = args.Length > 3 ? int.Parse(args[3]) : 5;
        var config = PretrainConfig.Load(configPath).Model.WithTokenizer(vocab, 0, 0);
        var root = Path.Combine(Path.GetTempPath(), "tiangong-bench-onnx");
        var fp32Dir = Path.Combine(root, "fp32");
        manual_seed(0);
        using (var model = ModelConfigs.CreateCausalLM(config))
        {
            model.InitializeWeights();
            ModelFolder.Save(fp32Dir, model, config, null);
            Console.WriteLine($"model: {configPath} ({config.ModelType}, random weights), {model.ParameterCount() / 1e6:F2}M parameters, vocab {vocab}; "
                + $"torch threads {get_num_threads()}, {Environment.ProcessorCount} cores; batch 1, {steps} decode steps after an 8-token prompt; best of {rounds} interleaved rounds");
        }
        // Every runner is loaded first and the rounds interleave them, so a burst of load from other jobs falls on
        // all five alike; each keeps its best round.
        var runners = new List<(string Runtime, string Weights, double MB, Func<double> Decode, IDisposable Owner)>();
        foreach (var bits in new int?[] { null, 4 })
        {
            var dir = Path.Combine(root, bits is null ? "onnx-fp32" : "onnx-int4");
            using (var source = ModelFolder.Load(fp32Dir)) OnnxExporter.Export(source, dir, bits);
            var session = OnnxDecoderSession.Open(dir, intraOpThreads: get_num_threads());
            double mb = Directory.GetFiles(dir, "model.onnx*").Sum(f => new FileInfo(f).Length) / 1e6;
            runners.Add(("ONNX Runtime", bits is null ? "fp32" : "int4 MatMulNBits (block 32)", mb, () => DecodeOnnx(session, steps), session));
        }
        var ours = new (string Name, GptqConfig? Quantization)[]
        {
            ("fp32", null), ("int8 (per channel)", new GptqConfig(8, -1, true)), ("int4 (group 32, asymmetric)", new GptqConfig(4, 32, false)),
        };
        foreach (var (name, quantization) in ours)
        {
            var dir = fp32Dir;
            if (quantization is not null)
            {
                dir = Path.Combine(root, $"int{quantization.Bits}");
                using var source = ModelFolder.Load(fp32Dir);
                QuantizedModel.QuantizeRtn(source.Module, quantization);
                QuantizedModel.Save(dir, source.Module, source.Config, quantization);
            }
            var loaded = ModelFolder.Load(dir);
            double mb = new FileInfo(Path.Combine(dir, ModelFolder.WeightsFile)).Length / 1e6;
            runners.Add(("TianGong (TorchSharp)", name, mb, () => DecodeOurs(loaded.AsCausalLM("bench"), steps), loaded));
        }
        var best = new double[runners.Count];
        for (int round = 0; round < rounds; round++)
            for (int i = 0; i < runners.Count; i++)
                best[i] = Math.Max(best[i], runners[i].Decode());
        Console.WriteLine("runtime | weights | file MB | batch-1 decode tok/s");
        for (int i = 0; i < runners.Count; i++)
        {
            Console.WriteLine($"{runners[i].Runtime} | {runners[i].Weights} | {runners[i].MB:F1} | {best[i]:F1}");
            runners[i].Owner.Dispose();
        }
        return 0;
    }

    private static readonly long[] Prompt = [3, 14, 15, 92, 65, 35, 89, 79];

    private static double DecodeOnnx(OnnxDecoderSession session, int steps)
    {
        {
            session.Reset(1);
            var logits = session.Forward(Prompt, [.. Prompt.Select(_ => 1L)], [.. Enumerable.Range(0, Prompt.Length).Select(i => (long)i)], 1);
            var clock = Stopwatch.StartNew();
            for (int s = 0; s < steps; s++)
            {
                long next = ArgMax(logits.AsSpan(logits.Length - session.Vocab));
                logits = session.Forward([next], [.. Enumerable.Repeat(1L, session.PastLength + 1)], [session.PastLength], 1);
            }
            return steps / clock.Elapsed.TotalSeconds;
        }
    }

    private static double DecodeOurs(CausalLM model, int steps)
    {
        using var prompt = tensor(Prompt).unsqueeze(0);
        return GreedyDecode.Time(model, prompt, steps).TokensPerSecond;
    }

    private static int ArgMax(ReadOnlySpan<float> values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++) if (values[i] > values[best]) best = i;
        return best;
    }
}
