using TianGong.Compression.Quantization;
using TianGong.Export.Onnx.Proto;
using DataType = TianGong.Export.Onnx.Proto.TensorProto.Types.DataType;

namespace TianGong.Export.Onnx;

/// <summary>
/// The building blocks every exported graph shares, written as ONNX opset-17 nodes with the same arithmetic as our
/// modules (Models/Layers): linear layers (fp32 MatMul, or com.microsoft MatMulNBits for int4), LayerNorm, RMSNorm,
/// GELU (erf and tanh forms), SiLU, rotary positions gathered by position id, and scaled dot-product attention under
/// an additive mask. Weights are read from the module's state dict by their Hugging Face keys.
/// </summary>
public sealed class OnnxLayers
{
    /// <summary>MatMulNBits block size: 32 weights along the input dimension share one scale and zero point.</summary>
    public const int Int4BlockSize = 32;

    private readonly IReadOnlyDictionary<string, Tensor> state;
    private readonly int? bits;
    private readonly Dictionary<string, string> defined = []; // a weight used twice (a tied embedding) is stored once

    public OnnxLayers(OnnxGraph graph, IReadOnlyDictionary<string, Tensor> state, int? bits)
    {
        Graph = graph;
        this.state = state;
        this.bits = bits;
    }

    public OnnxGraph Graph { get; }

    public bool Has(string key) => state.ContainsKey(key);

    public Tensor Get(string key) => state.TryGetValue(key, out var t) ? t
        : throw new TianGongException($"ONNX export: the model has no weight '{key}'");

    /// <summary>A weight as a float32 initializer under its checkpoint key, optionally transposed (2-D).</summary>
    public string Weight(string key, bool transpose = false)
    {
        var name = transpose ? key + ".T" : key;
        if (defined.TryGetValue(name, out var existing)) return existing;
        var t = Get(key);
        var shape = transpose ? [t.shape[1], t.shape[0]] : t.shape;
        return defined[name] = Graph.Weight(name, shape, () =>
        {
            using var scope = NewDisposeScope();
            var w = t.detach().to(ScalarType.Float32);
            return (transpose ? w.t() : w).contiguous().data<float>().ToArray();
        });
    }

    /// <summary>
    /// y = x Wᵀ + b for a torch-layout weight (out, in) under <paramref name="prefix"/>.weight (and .bias when present).
    /// <paramref name="conv1D"/>: GPT-2's Conv1D stores (in, out), already the MatMul layout.
    /// </summary>
    public string Linear(string x, string prefix, bool conv1D = false)
    {
        var key = prefix + ".weight";
        string y;
        if (bits == 4)
            y = MatMulNBits(x, key, conv1D);
        else
            y = Graph.Op("MatMul", x, conv1D ? Weight(key) : Weight(key, transpose: true));
        return Has(prefix + ".bias") ? Graph.Op("Add", y, Weight(prefix + ".bias")) : y;
    }

    /// <summary>
    /// The weight as ONNX Runtime's MatMulNBits (bits 4, block 32): our round-to-nearest int4 quantizer
    /// (<see cref="QuantizedWeight.Rtn"/>, asymmetric, fp16-rounded scales), repacked to MatMulNBits' layout, so ONNX
    /// Runtime dequantizes to exactly the weights of a model quantized by <c>tiangong quantize --bits 4 --group-size 32</c>.
    /// </summary>
    private string MatMulNBits(string x, string key, bool conv1D)
    {
        var t = Get(key);
        long n = conv1D ? t.shape[1] : t.shape[0], k = conv1D ? t.shape[0] : t.shape[1];
        var packed = new Lazy<MatMulNBitsWeight>(() =>
        {
            using var scope = NewDisposeScope();
            var w = t.detach().to(ScalarType.Float32);
            var rowMajor = (conv1D ? w.t() : w).contiguous().data<float>().ToArray();      // (N, K)
            var q = QuantizedWeight.Rtn(rowMajor, k, n, new GptqConfig(4, Int4BlockSize, Sym: false));
            return MatMulNBitsWeight.FromGptq(q);
        });
        long blocks = (k + Int4BlockSize - 1) / Int4BlockSize;
        var b = Graph.Initializer(key + ".qweight", DataType.Uint8, [n, blocks, Int4BlockSize / 2], () => packed.Value.B);
        var scales = Graph.Initializer(key + ".scales", DataType.Float, [n * blocks], () => packed.Value.ScaleBytes);
        var zeros = Graph.Initializer(key + ".qzeros", DataType.Uint8, [n * ((blocks + 1) / 2)], () => packed.Value.ZeroPoints);
        return Graph.Op("MatMulNBits", [x, b, scales, zeros], null, OnnxGraph.MicrosoftDomain,
            OnnxAttribute.Int("K", k), OnnxAttribute.Int("N", n), OnnxAttribute.Int("bits", 4), OnnxAttribute.Int("block_size", Int4BlockSize));
    }

    public string LayerNorm(string x, string prefix, double eps) =>
        Graph.Op("LayerNormalization", [x, Weight(prefix + ".weight"), Weight(prefix + ".bias")],
            OnnxAttribute.Int("axis", -1), OnnxAttribute.Float("epsilon", (float)eps));

    /// <summary>RMSNorm as ours: x · rsqrt(mean(x²) + eps) · w.</summary>
    public string RmsNorm(string x, string key, double eps)
    {
        var meanSquare = Graph.Op("ReduceMean", [Graph.Op("Mul", x, x)], OnnxAttribute.Ints("axes", -1), OnnxAttribute.Int("keepdims", 1));
        var inv = Graph.Op("Reciprocal", Graph.Op("Sqrt", Graph.Op("Add", meanSquare, Graph.Scalar((float)eps))));
        return Graph.Op("Mul", Graph.Op("Mul", x, inv), Weight(key));
    }

    public string Activation(string x, string name) => name switch
    {
        // Exact GELU: x/2 · (1 + erf(x/√2)).
        "gelu" => Graph.Op("Mul", Graph.Op("Mul", x, Graph.Scalar(0.5f)),
            Graph.Op("Add", Graph.Scalar(1f), Graph.Op("Erf", Graph.Op("Mul", x, Graph.Scalar((float)(1 / Math.Sqrt(2))))))),
        // The tanh form: x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³))).
        "gelu_new" or "gelu_pytorch_tanh" => Graph.Op("Mul", Graph.Op("Mul", x, Graph.Scalar(0.5f)),
            Graph.Op("Add", Graph.Scalar(1f), Graph.Op("Tanh", Graph.Op("Mul", Graph.Scalar((float)Math.Sqrt(2 / Math.PI)),
                Graph.Op("Add", x, Graph.Op("Mul", Graph.Scalar(0.044715f), Graph.Op("Mul", x, Graph.Op("Mul", x, x)))))))),
        "silu" => Graph.Op("Mul", x, Graph.Op("Sigmoid", x)),
        "relu" => Graph.Op("Relu", x),
        _ => throw new TianGongException($"ONNX export: activation '{name}' is not supported"),
    };

    /// <summary>(B, T, H·D) → (B, H, T, D).</summary>
    public string SplitHeads(string x, int heads, int headDim) =>
        Graph.Op("Transpose", [Graph.Op("Reshape", x, Graph.Int64s(0, 0, heads, headDim))], OnnxAttribute.Ints("perm", 0, 2, 1, 3));

    /// <summary>(B, H, T, D) → (B, T, H·D).</summary>
    public string MergeHeads(string x, int heads, int headDim) =>
        Graph.Op("Reshape", Graph.Op("Transpose", [x], OnnxAttribute.Ints("perm", 0, 2, 1, 3)), Graph.Int64s(0, 0, heads * headDim));

    /// <summary>Grouped-query attention: each of the kvHeads heads (B, Hkv, S, D) repeated for its group of query heads.</summary>
    public string RepeatKv(string x, int kvHeads, int heads, int headDim)
    {
        if (heads == kvHeads) return x;
        var expanded = Graph.Op("Expand", Graph.Op("Unsqueeze", x, Graph.Int64s(2)), Graph.Int64s(1, 1, heads / kvHeads, 1, 1)); // (B, Hkv, g, S, D)
        return Graph.Op("Reshape", expanded, Graph.Int64s(0, heads, -1, headDim));
    }

    /// <summary>softmax(q kᵀ / √D + mask) v over (B, H, T, D) queries and (B, H, S, D) keys and values.</summary>
    public string Attention(string q, string k, string v, string mask, int headDim)
    {
        var scores = Graph.Op("MatMul", q, Graph.Op("Transpose", [k], OnnxAttribute.Ints("perm", 0, 1, 3, 2)));   // (B, H, T, S)
        scores = Graph.Op("Add", Graph.Op("Mul", scores, Graph.Scalar((float)(1 / Math.Sqrt(headDim)))), mask);
        return Graph.Op("MatMul", Graph.Op("Softmax", [scores], OnnxAttribute.Int("axis", -1)), v);
    }

    /// <summary>Hugging Face's rotate-half rotary: x·cos + rotate_half(x)·sin, with cos and sin (B, 1, T, D).</summary>
    public string Rotary(string x, string cos, string sin, int headDim)
    {
        var halves = Graph.OpMulti("Split", [x, Graph.Int64s(headDim / 2, headDim / 2)], 2, null, "", OnnxAttribute.Int("axis", -1));
        var rotated = Graph.Op("Concat", [Graph.Op("Neg", halves[1]), halves[0]], OnnxAttribute.Int("axis", -1));
        return Graph.Op("Add", Graph.Op("Mul", x, cos), Graph.Op("Mul", rotated, sin));
    }

    /// <summary>(1 or B, …, S) boolean "may attend" → additive mask: 0 where allowed, the lowest float elsewhere.</summary>
    public string Additive(string allowed) => Graph.Op("Where", allowed, Graph.Scalar(0f), Graph.Scalar(float.MinValue));
}

/// <summary>
/// One weight in MatMulNBits' layout (onnxruntime docs/ContribOperators.md, com.microsoft.MatMulNBits): B is uint8
/// (N, k_blocks, block_size·bits/8), each block's 4-bit values along K packed two per byte, the first in the low
/// nibble; scales (N·k_blocks) in the input's type; zero points packed the same way, (N, ⌈k_blocks/2⌉).
/// </summary>
public sealed record MatMulNBitsWeight(byte[] B, byte[] ScaleBytes, byte[] ZeroPoints)
{
    public static MatMulNBitsWeight FromGptq(QuantizedWeight q)
    {
        int blockSize = q.GroupSize;
        if (q.Config.Bits != 4 || blockSize != OnnxLayers.Int4BlockSize)
            throw new TianGongException($"MatMulNBits export needs 4-bit weights in groups of {OnnxLayers.Int4BlockSize}, got {q.Config.Bits} bits in groups of {blockSize}");
        long k = q.InFeatures, n = q.OutFeatures, blocks = q.Groups;
        var values = GptqPacking.UnpackWeight(q.QWeight, k, n, 4);                          // (K, N)
        var zeros = GptqPacking.UnpackZeros(q.QZeros, blocks, n, 4);                         // (blocks, N)
        var b = new byte[n * blocks * blockSize / 2];
        var scales = new float[n * blocks];
        long zeroStride = (blocks + 1) / 2;
        var zp = new byte[n * zeroStride];
        for (long o = 0; o < n; o++)
            for (long g = 0; g < blocks; g++)
            {
                scales[o * blocks + g] = (float)q.Scales[g * n + o];
                int zero = zeros[g * n + o];
                zp[o * zeroStride + g / 2] |= (byte)(g % 2 == 0 ? zero : zero << 4);
                for (int j = 0; j < blockSize; j++)
                {
                    long i = g * blockSize + j;
                    int value = i < k ? values[i * n + o] : zero;                             // padding past K: dequantizes to 0
                    b[(o * blocks + g) * (blockSize / 2) + j / 2] |= (byte)(j % 2 == 0 ? value : value << 4);
                }
            }
        return new MatMulNBitsWeight(b, System.Runtime.InteropServices.MemoryMarshal.AsBytes(scales.AsSpan()).ToArray(), zp);
    }
}
