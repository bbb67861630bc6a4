using TianGong.Models;
using TianGong.Models.Gpt2;
using TianGong.Models.Layers;
using TianGong.Models.Llama;
using TianGong.Models.Mistral;
using TianGong.Models.Qwen2;
using DataType = TianGong.Export.Onnx.Proto.TensorProto.Types.DataType;

namespace TianGong.Export.Onnx;

/// <summary>
/// What the exported decoder graph needs to know about a model, whichever family's config it came from.
/// <paramref name="WindowOfLayer"/>: Mistral's and Qwen2's sliding window per layer (null: full attention).
/// </summary>
public sealed record DecoderShape(string Family, int Layers, int Heads, int KvHeads, int HeadDim, int Hidden, int Vocab,
    int ContextLength, bool Tied, Func<int, int?> WindowOfLayer)
{
    public static DecoderShape Of(IModelConfig config) => config switch
    {
        Gpt2Config c => new("gpt2", c.NLayer, c.NHead, c.NHead, c.NEmbd / c.NHead, c.NEmbd, c.VocabSize, c.NPositions, c.TieWordEmbeddings, _ => null),
        LlamaConfig c => new("llama", c.NumHiddenLayers, c.NumAttentionHeads, c.KeyValueHeads, c.HeadSize, c.HiddenSize, c.VocabSize,
            c.MaxPositionEmbeddings, c.TieWordEmbeddings, _ => null),
        MistralConfig c => new("mistral", c.NumHiddenLayers, c.NumAttentionHeads, c.KeyValueHeads, c.HeadSize, c.HiddenSize, c.VocabSize,
            c.MaxPositionEmbeddings, c.TieWordEmbeddings, _ => c.SlidingWindow),
        Qwen2Config c => new("qwen2", c.NumHiddenLayers, c.NumAttentionHeads, c.KeyValueHeads, c.HeadSize, c.HiddenSize, c.VocabSize,
            c.MaxPositionEmbeddings, c.TieWordEmbeddings, c.WindowOfLayer),
        _ => throw new TianGongException($"ONNX export covers gpt2, llama, mistral, qwen2 (decoders) and bert (encoder); model_type '{config.ModelType}' is not one of them"),
    };
}

/// <summary>
/// A decoder-only model as the ONNX graph Optimum and ONNX Runtime GenAI run: inputs <c>input_ids</c>,
/// <c>attention_mask</c> (B, past + T), <c>position_ids</c> and <c>past_key_values.N.key|value</c>
/// (B, kv_heads, past, head_dim); outputs <c>logits</c> (B, T, V) and <c>present.N.key|value</c> (B, kv_heads,
/// past + T, head_dim), the past with the new keys (after rotary) appended. Batch, sequence and past lengths are
/// symbolic. The mask is ours (AttentionContext): causal within the sequence, padding keys hidden, a padding query
/// still seeing itself, and each sliding-window layer's window.
/// </summary>
public static class OnnxDecoder
{
    public static void Build(OnnxLayers l, IModelConfig config)
    {
        var shape = DecoderShape.Of(config);
        var g = l.Graph;
        g.Input("input_ids", DataType.Int64, "batch_size", "sequence_length");
        g.Input("attention_mask", DataType.Int64, "batch_size", "total_sequence_length");
        g.Input("position_ids", DataType.Int64, "batch_size", "sequence_length");
        for (int i = 0; i < shape.Layers; i++)
            foreach (var kind in new[] { "key", "value" })
                g.Input($"past_key_values.{i}.{kind}", DataType.Float, "batch_size", shape.KvHeads, "past_sequence_length", shape.HeadDim);
        g.Output("logits", DataType.Float, "batch_size", "sequence_length", shape.Vocab);
        for (int i = 0; i < shape.Layers; i++)
            foreach (var kind in new[] { "key", "value" })
                g.Output($"present.{i}.{kind}", DataType.Float, "batch_size", shape.KvHeads, "total_sequence_length", shape.HeadDim);

        var masks = new Masks(l);
        var hidden = config switch
        {
            Gpt2Config c => Gpt2(l, c, shape, masks),
            LlamaConfig c => LlamaLike(l, shape, c.RmsNormEps, c.Rope, masks),
            MistralConfig c => LlamaLike(l, shape, c.RmsNormEps, c.Rope, masks),
            Qwen2Config c => LlamaLike(l, shape, c.RmsNormEps, c.Rope, masks),
            _ => throw new InvalidOperationException(), // DecoderShape.Of has already named the family
        };
        var head = shape.Tied
            ? g.Op("Transpose", [l.Weight(shape.Family == "gpt2" ? "transformer.wte.weight" : "model.embed_tokens.weight")], OnnxAttribute.Ints("perm", 1, 0))
            : l.Weight("lm_head.weight", transpose: true);
        g.Op("MatMul", [hidden, head], "logits");                                               // (B, T, V)
    }

    /// <summary>Self-attention of layer i over (B, T, C) projections, with the past appended and the present written out.</summary>
    private static string AttendWithPast(OnnxLayers l, DecoderShape s, int i, string q, string k, string v, string mask, (string Cos, string Sin)? rope)
    {
        var g = l.Graph;
        q = l.SplitHeads(q, s.Heads, s.HeadDim);                                                 // (B, H, T, D)
        k = l.SplitHeads(k, s.KvHeads, s.HeadDim);                                               // (B, Hkv, T, D)
        v = l.SplitHeads(v, s.KvHeads, s.HeadDim);
        if (rope is var (cos, sin))
        {
            q = l.Rotary(q, cos, sin, s.HeadDim);
            k = l.Rotary(k, cos, sin, s.HeadDim);
        }
        k = g.Op("Concat", [$"past_key_values.{i}.key", k], $"present.{i}.key", "", OnnxAttribute.Int("axis", 2));     // (B, Hkv, S, D)
        v = g.Op("Concat", [$"past_key_values.{i}.value", v], $"present.{i}.value", "", OnnxAttribute.Int("axis", 2));
        var y = l.Attention(q, l.RepeatKv(k, s.KvHeads, s.Heads, s.HeadDim), l.RepeatKv(v, s.KvHeads, s.Heads, s.HeadDim), mask, s.HeadDim);
        return l.MergeHeads(y, s.Heads, s.HeadDim);                                              // (B, T, H·D)
    }

    // As Models/Gpt2: pre-LayerNorm blocks, learned positions, fused q|k|v Conv1D, GELU MLP.
    private static string Gpt2(OnnxLayers l, Gpt2Config c, DecoderShape s, Masks masks)
    {
        var g = l.Graph;
        var x = g.Op("Add", g.Op("Gather", l.Weight("transformer.wte.weight"), "input_ids"), g.Op("Gather", l.Weight("transformer.wpe.weight"), "position_ids"));
        for (int i = 0; i < s.Layers; i++)
        {
            var p = $"transformer.h.{i}";
            var qkv = l.Linear(l.LayerNorm(x, $"{p}.ln_1", c.LayerNormEpsilon), $"{p}.attn.c_attn", conv1D: true);  // (B, T, 3C)
            var parts = g.OpMulti("Split", [qkv, g.Int64s(c.NEmbd, c.NEmbd, c.NEmbd)], 3, null, "", OnnxAttribute.Int("axis", -1));
            var y = AttendWithPast(l, s, i, parts[0], parts[1], parts[2], masks.For(null), rope: null);
            x = g.Op("Add", x, l.Linear(y, $"{p}.attn.c_proj", conv1D: true));
            var h = l.Activation(l.Linear(l.LayerNorm(x, $"{p}.ln_2", c.LayerNormEpsilon), $"{p}.mlp.c_fc", conv1D: true), c.ActivationFunction);
            x = g.Op("Add", x, l.Linear(h, $"{p}.mlp.c_proj", conv1D: true));
        }
        return l.LayerNorm(x, "transformer.ln_f", c.LayerNormEpsilon);
    }

    // As Models/Llama (Mistral and Qwen2 share it: Qwen2's q/k/v biases are read when the checkpoint has them):
    // RMSNorm, rotary q and k, grouped-query attention, SwiGLU MLP.
    private static string LlamaLike(OnnxLayers l, DecoderShape s, double eps, RopeParameters rope, Masks masks)
    {
        var g = l.Graph;
        var (cos, sin) = RotaryTables(l, s, rope);
        var x = g.Op("Gather", l.Weight("model.embed_tokens.weight"), "input_ids");           // (B, T, C)
        for (int i = 0; i < s.Layers; i++)
        {
            var p = $"model.layers.{i}";
            var n = l.RmsNorm(x, $"{p}.input_layernorm.weight", eps);
            var y = AttendWithPast(l, s, i, l.Linear(n, $"{p}.self_attn.q_proj"), l.Linear(n, $"{p}.self_attn.k_proj"), l.Linear(n, $"{p}.self_attn.v_proj"),
                masks.For(s.WindowOfLayer(i)), (cos, sin));
            x = g.Op("Add", x, l.Linear(y, $"{p}.self_attn.o_proj"));
            n = l.RmsNorm(x, $"{p}.post_attention_layernorm.weight", eps);
            var h = g.Op("Mul", l.Activation(l.Linear(n, $"{p}.mlp.gate_proj"), "silu"), l.Linear(n, $"{p}.mlp.up_proj"));
            x = g.Op("Add", x, l.Linear(h, $"{p}.mlp.down_proj"));
        }
        return l.RmsNorm(x, "model.norm.weight", eps);
    }

    /// <summary>
    /// cos and sin (B, 1, T, D) at position_ids, gathered from tables for every position up to the context length,
    /// computed as RotaryEmbedding computes its own (same inverse frequencies and attention scaling, in float64).
    /// </summary>
    private static (string Cos, string Sin) RotaryTables(OnnxLayers l, DecoderShape s, RopeParameters rope)
    {
        if (rope.Kind == "dynamic")
            throw new TianGongException("ONNX export: rope_type 'dynamic' recomputes its tables per sequence length; the exported graph has fixed tables");
        var g = l.Graph;
        float[] Table(bool cosine)
        {
            using var scope = NewDisposeScope();
            var (invFreq, scaling) = RotaryEmbedding.InverseFrequencies(rope, s.HeadDim, s.ContextLength, seqLen: null);
            var angles = outer(arange(0, s.ContextLength, dtype: ScalarType.Float64), invFreq.to(ScalarType.Float64)); // (P, D/2)
            var emb = cat([angles, angles], dim: -1);
            return ((cosine ? emb.cos() : emb.sin()) * scaling).to(ScalarType.Float32).contiguous().data<float>().ToArray();
        }
        var cosTable = g.Weight("rotary.cos", [s.ContextLength, s.HeadDim], () => Table(true));
        var sinTable = g.Weight("rotary.sin", [s.ContextLength, s.HeadDim], () => Table(false));
        var one = g.Int64s(1);
        return (g.Op("Unsqueeze", g.Op("Gather", cosTable, "position_ids"), one), g.Op("Unsqueeze", g.Op("Gather", sinTable, "position_ids"), one));
    }

    /// <summary>
    /// Additive masks (B, 1, T, S), one per distinct window. Query i sits at key slot past + i (S − T + i) and may see
    /// key j when j ≤ its slot, j is not padding and (with a window w) slot − j &lt; w; every query sees its own slot.
    /// </summary>
    private sealed class Masks(OnnxLayers l)
    {
        private readonly Dictionary<int, string> byWindow = [];
        private (string Keys, string Queries, string Pad)? basis;

        public string For(int? window)
        {
            int key = window ?? -1;
            if (byWindow.TryGetValue(key, out var mask)) return mask;
            var g = l.Graph;
            var (keys, queries, pad) = basis ??= Basis();
            var allowed = g.Op("And", g.Op("LessOrEqual", keys, queries), pad);                 // (B, 1, T, S)
            if (window is { } w)
                allowed = g.Op("And", allowed, g.Op("Less", g.Op("Sub", queries, keys), g.Int64s(w)));
            allowed = g.Op("Or", allowed, g.Op("Equal", keys, queries));
            return byWindow[key] = l.Additive(allowed);
        }

        private (string, string, string) Basis()
        {
            var g = l.Graph;
            var zero = g.Op("Squeeze", g.Int64s(0));
            var oneStep = g.Op("Squeeze", g.Int64s(1));
            var t = g.Op("Squeeze", g.Op("Shape", ["input_ids"], OnnxAttribute.Int("start", 1), OnnxAttribute.Int("end", 2)));
            var s = g.Op("Squeeze", g.Op("Shape", ["attention_mask"], OnnxAttribute.Int("start", 1), OnnxAttribute.Int("end", 2)));
            var keys = g.Op("Unsqueeze", g.Op("Range", zero, s, oneStep), g.Int64s(0));                               // (1, S)
            var queries = g.Op("Unsqueeze", g.Op("Add", g.Op("Range", zero, t, oneStep), g.Op("Sub", s, t)), g.Int64s(1)); // (T, 1)
            var pad = g.Op("Unsqueeze", g.Op("Cast", ["attention_mask"], OnnxAttribute.Int("to", (long)DataType.Bool)), g.Int64s(1, 2)); // (B, 1, 1, S)
            return (keys, queries, pad);
        }
    }
}
