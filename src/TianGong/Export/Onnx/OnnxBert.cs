using TianGong.Models.Bert;
using DataType = TianGong.Export.Onnx.Proto.TensorProto.Types.DataType;

namespace TianGong.Export.Onnx;

/// <summary>
/// A BERT encoder as Optimum exports it: <c>input_ids</c>, <c>attention_mask</c>, <c>token_type_ids</c> (B, T) →
/// <c>last_hidden_state</c> (B, T, C) and, when the checkpoint has a pooler, <c>pooler_output</c> (B, C). Same
/// arithmetic as Models/Bert: embeddings (word + token type + position) → LayerNorm, then post-LN layers with
/// bidirectional attention over the non-padding keys.
/// </summary>
public static class OnnxBert
{
    public static void Build(OnnxLayers l, BertConfig c)
    {
        if (c.PositionEmbeddingType != "absolute")
            throw new TianGongException($"ONNX export: BERT position_embedding_type '{c.PositionEmbeddingType}' is not supported (absolute only)");
        var g = l.Graph;
        // BertForMaskedLM and friends keep the encoder under "bert."; a bare BertModel has no prefix.
        var root = l.Has("bert.embeddings.word_embeddings.weight") ? "bert." : "";
        g.Input("input_ids", DataType.Int64, "batch_size", "sequence_length");
        g.Input("attention_mask", DataType.Int64, "batch_size", "sequence_length");
        g.Input("token_type_ids", DataType.Int64, "batch_size", "sequence_length");
        g.Output("last_hidden_state", DataType.Float, "batch_size", "sequence_length", c.HiddenSize);
        bool pooled = l.Has(root + "pooler.dense.weight");
        if (pooled) g.Output("pooler_output", DataType.Float, "batch_size", c.HiddenSize);

        var e = root + "embeddings";
        var t = g.Op("Squeeze", g.Op("Shape", ["input_ids"], OnnxAttribute.Int("start", 1), OnnxAttribute.Int("end", 2)));
        var positions = g.Op("Range", g.Op("Squeeze", g.Int64s(0)), t, g.Op("Squeeze", g.Int64s(1)));   // (T)
        var x = g.Op("Add", g.Op("Add", g.Op("Gather", l.Weight($"{e}.word_embeddings.weight"), "input_ids"),
            g.Op("Gather", l.Weight($"{e}.token_type_embeddings.weight"), "token_type_ids")), g.Op("Gather", l.Weight($"{e}.position_embeddings.weight"), positions));
        x = l.LayerNorm(x, $"{e}.LayerNorm", c.LayerNormEps);                                    // (B, T, C)

        var keep = g.Op("Unsqueeze", g.Op("Cast", ["attention_mask"], OnnxAttribute.Int("to", (long)DataType.Bool)), g.Int64s(1, 2)); // (B, 1, 1, T)
        var mask = l.Additive(keep);
        int headDim = c.HiddenSize / c.NumAttentionHeads;
        for (int i = 0; i < c.NumHiddenLayers; i++)
        {
            var p = $"{root}encoder.layer.{i}";
            var q = l.SplitHeads(l.Linear(x, $"{p}.attention.self.query"), c.NumAttentionHeads, headDim);
            var k = l.SplitHeads(l.Linear(x, $"{p}.attention.self.key"), c.NumAttentionHeads, headDim);
            var v = l.SplitHeads(l.Linear(x, $"{p}.attention.self.value"), c.NumAttentionHeads, headDim);
            var y = l.MergeHeads(l.Attention(q, k, v, mask, headDim), c.NumAttentionHeads, headDim);
            var h = l.LayerNorm(g.Op("Add", l.Linear(y, $"{p}.attention.output.dense"), x), $"{p}.attention.output.LayerNorm", c.LayerNormEps);
            var inner = l.Activation(l.Linear(h, $"{p}.intermediate.dense"), c.HiddenAct);
            x = l.LayerNorm(g.Op("Add", l.Linear(inner, $"{p}.output.dense"), h), $"{p}.output.LayerNorm", c.LayerNormEps);
        }
        g.Op("Identity", [x], "last_hidden_state");
        if (pooled)
        {
            var first = g.Op("Gather", [x, g.Op("Squeeze", g.Int64s(0))], OnnxAttribute.Int("axis", 1));   // (B, C)
            g.Op("Tanh", [l.Linear(first, root + "pooler.dense")], "pooler_output");
        }
    }
}
