using System.Diagnostics;
using TianGong.Compression.Quantization;
using TianGong.Models.Layers;
using TianGong.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace TianGong.Bench;

/// <summary>
/// The int8/int4 GPTQ decode kernel per projection shape of a decode step at one row, against the fp32 decode kernel
/// (<see cref="DecodeMatmul"/>, Conv1D layout) on the same shape (issue 12). "cold": each call takes the next of enough
/// weight copies to exceed the L3 cache (~96 MB of packed bytes), as in a decode step; "hot": one copy, in cache, so
/// the time is the call's overhead plus arithmetic. GB/s counts the bytes of the weight a call reads.
/// </summary>
internal static class QuantizedGemvBench
{
    public static int Run(string[] args)
    {
        if (args is ["digest"]) return Digest();
        string configPath = args.Length > 0 ? args[0] : "configs/poetry-small.json";
        int threads = args.Length > 1 ? int.Parse(args[1]) : 2;
        int rounds = args.Length > 2 ? int.Parse(args[2]) : 3;
        set_num_threads(threads);
        Console.WriteLine($"load average at start: {ProfileBench.LoadAverage()}; torch threads {threads}");
        var config = PretrainConfig.Load(configPath).Model.WithTokenizer(16384, 0, 0);
        var shapes = DecodeMatmulBench.Shapes(config.ModelWidth);
        Console.WriteLine("shape | variant | cold µs (GB/s) | hot µs (GB/s)");
        using var _ = no_grad();
        foreach (var (name, inF, outF) in shapes)
        {
            using var scope = NewDisposeScope();
            var x = randn(1, inF);
            foreach (var (variant, bytesPerWeight, config2) in new (string, double, GptqConfig?)[] { ("fp32", 4, null), ("int8", 1, new GptqConfig(8, -1, true)), ("int4 g128", 0.5, new GptqConfig(4, 128, true)) })
            {
                double bytes = inF * outF * bytesPerWeight;
                int copies = (int)Math.Max(2, 96e6 / bytes);
                Func<int, Tensor> op;
                var disposables = new List<IDisposable>();
                if (config2 is null)
                {
                    var w = Enumerable.Range(0, copies).Select(_ => randn(inF, outF)).ToArray();
                    op = i => DecodeMatmul.TryInOut(x, w[i], null) ?? throw new InvalidOperationException("kernel did not apply");
                }
                else
                {
                    using var linear = nn.Linear(inF, outF, hasBias: false);
                    var parts = LinearLayers.Describe(linear)!;
                    var first = QuantizedLinear.Rtn(parts, config2);
                    var layers = new List<QuantizedLinear> { first };
                    // Copies share the values: only the memory they live in matters here.
                    for (int i = 1; i < copies; i++)
                    {
                        var copy = QuantizedLinear.Rtn(parts, config2);
                        layers.Add(copy);
                    }
                    disposables.AddRange(layers);
                    op = i => layers[i].forward(x);
                }
                double cold = 0, hot = 0;
                for (int r = 0; r < rounds; r++)
                {
                    cold = DecodeMatmulBench.Min(cold, DecodeMatmulBench.Time(op, copies, minCalls: 200));
                    hot = DecodeMatmulBench.Min(hot, DecodeMatmulBench.Time(op, copies, used: 1, minCalls: 200));
                }
                Console.WriteLine($"{name} {inF}→{outF} | {variant} | {cold * 1e6:F1} ({bytes / cold / 1e9:F1}) | {hot * 1e6:F1} ({bytes / hot / 1e9:F1})");
                foreach (var d in disposables) d.Dispose();
            }
        }
        Console.WriteLine($"load average at end: {ProfileBench.LoadAverage()}");
        return 0;
    }

    /// <summary>
    /// A digest of the kernel's output bits over shapes, group sizes and 1–8 rows (with bias): equal before and after a
    /// change of the kernel's loops means the same numbers bit for bit.
    /// </summary>
    private static int Digest()
    {
        using var _ = no_grad();
        using var hash = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        foreach (var (inF, outF) in new (long, long)[] { (256, 104), (512, 1536), (2048, 512), (512, 2056) })
            foreach (var q in new[] { new GptqConfig(8, -1, true), new GptqConfig(8, 32, false), new GptqConfig(4, 32, true), new GptqConfig(4, 128, false) })
                foreach (int rows in new[] { 1, 2, 3, 8 })
                {
                    using var scope = NewDisposeScope();
                    manual_seed(inF * 7 + outF + rows);
                    using var linear = nn.Linear(inF, outF, hasBias: true);
                    using var layer = QuantizedLinear.Rtn(LinearLayers.Describe(linear)!, q);
                    var x = randn(rows, inF);
                    var y = layer.forward(x).contiguous();
                    var bytes = y.bytes.ToArray();
                    hash.AppendData(bytes);
                    Console.WriteLine($"{inF}→{outF} {q.Bits}-bit g{q.GroupSize} rows {rows}: {Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(bytes))[..16]}");
                }
        Console.WriteLine($"digest {Convert.ToHexString(hash.GetCurrentHash())[..16]}");
        return 0;
    }
}
