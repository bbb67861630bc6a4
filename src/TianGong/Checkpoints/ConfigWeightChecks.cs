using System.Text.RegularExpressions;
using TianGong.Models;
using TianGong.Models.Bert;
using TianGong.Models.Gpt2;
using TianGong.Models.Llama;
using TianGong.Models.Mistral;
using TianGong.Models.Qwen2;
using TianGong.Models.T5;

namespace TianGong.Checkpoints;

/// <summary>
/// Checks config.json against the shapes in the weight files' headers before any model is built. The config's sizes
/// decide what the constructor allocates, so a config claiming 400 layers, a vocabulary of a million or 2^31−1
/// positions beside a 16 MB file must fail here, naming the field, and not after gigabytes were allocated.
/// </summary>
internal static partial class ConfigWeightChecks
{
    /// <summary>Most positions a rotary family may declare: its cos/sin tables are precomputed for every one (2^21 × 128 dims ≈ 2 GiB).</summary>
    public const long MaxRotaryPositions = 1L << 21;

    /// <summary>A config field whose value must equal one dimension of a checkpoint tensor (found by key suffix).</summary>
    private sealed record Dim(string Field, long Value, string Tensor, int Axis);

    /// <summary>A config field that counts repeated blocks: the number of distinct i in keys containing <c>{Prefix}.{i}.</c>.</summary>
    private sealed record Blocks(string Field, long Value, string Prefix);

    public static void Check(IModelConfig config, CheckpointWeights weights, string configPath)
    {
        var (dims, blocks, rotaryPositions) = Describe(config);
        foreach (var dim in dims)
        {
            var key = weights.Keys.Where(k => k == dim.Tensor || k.EndsWith("." + dim.Tensor, StringComparison.Ordinal)).Order(StringComparer.Ordinal).FirstOrDefault();
            if (key is null) continue; // reported by name with the other missing tensors, after the build
            var shape = weights.Info(key).Shape;
            if (dim.Axis >= shape.Count || shape[dim.Axis] != dim.Value)
                throw new TianGongException($"{configPath}: {dim.Field} is {dim.Value}, but the weights' tensor '{key}' has shape [{string.Join(", ", shape)}]; config.json does not describe these weights");
        }
        foreach (var block in blocks)
        {
            var pattern = new Regex($@"(?:^|\.){Regex.Escape(block.Prefix)}\.(\d+)\.", RegexOptions.CultureInvariant);
            var indices = weights.Keys.Select(k => pattern.Match(k)).Where(m => m.Success)
                .Select(m => long.TryParse(m.Groups[1].Value, out long i) ? i : -1).ToHashSet();
            if (indices.Count != block.Value)
                throw new TianGongException($"{configPath}: {block.Field} is {block.Value}, but the weights hold {indices.Count} of '{block.Prefix}.N'; config.json does not describe these weights");
        }
        if (rotaryPositions is { } positions && positions > MaxRotaryPositions)
            throw new TianGongException($"{configPath}: max_position_embeddings is {positions}, over the {MaxRotaryPositions} TianGong supports (rotary tables are precomputed for every position)");
    }

    private static (IReadOnlyList<Dim>, IReadOnlyList<Blocks>, long? RotaryPositions) Describe(IModelConfig config) => config switch
    {
        LlamaConfig c => Decoder(c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers, c.NumAttentionHeads, c.KeyValueHeads, c.HeadSize, c.MaxPositionEmbeddings),
        MistralConfig c => Decoder(c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers, c.NumAttentionHeads, c.KeyValueHeads, c.HeadSize, c.MaxPositionEmbeddings),
        Qwen2Config c => Decoder(c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers, c.NumAttentionHeads, c.KeyValueHeads, c.HeadSize, c.MaxPositionEmbeddings),
        Gpt2Config c => (
            [
                new("vocab_size", c.VocabSize, "wte.weight", 0),
                new("n_embd", c.NEmbd, "wte.weight", 1),
                new("n_positions", c.NPositions, "wpe.weight", 0),
                new("n_inner", c.InnerSize, "h.0.mlp.c_fc.weight", 1),
            ],
            [new("n_layer", c.NLayer, "h")],
            null),
        BertConfig c => (
            [
                new("vocab_size", c.VocabSize, "embeddings.word_embeddings.weight", 0),
                new("hidden_size", c.HiddenSize, "embeddings.word_embeddings.weight", 1),
                new("max_position_embeddings", c.MaxPositionEmbeddings, "embeddings.position_embeddings.weight", 0),
                new("type_vocab_size", c.TypeVocabSize, "embeddings.token_type_embeddings.weight", 0),
                new("intermediate_size", c.IntermediateSize, "encoder.layer.0.intermediate.dense.weight", 0),
            ],
            [new("num_hidden_layers", c.NumHiddenLayers, "layer")],
            null),
        T5Config c => (
            [
                new("vocab_size", c.VocabSize, "shared.weight", 0),
                new("d_model", c.DModel, "shared.weight", 1),
                new("num_heads × d_kv", (long)c.NumHeads * c.DKv, "encoder.block.0.layer.0.SelfAttention.q.weight", 0),
                new("relative_attention_num_buckets", c.RelativeAttentionNumBuckets, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", 0),
                new("d_ff", c.DFf, "encoder.block.0.layer.1.DenseReluDense.wo.weight", 1),
            ],
            [new("num_layers", c.NumLayers, "encoder.block"), new("num_decoder_layers", c.DecoderLayers, "decoder.block")],
            null),
        _ => ([], [], null),
    };

    // Llama, Mistral and Qwen2 share their checkpoint layout (model.embed_tokens, model.layers.N.{self_attn,mlp}).
    private static (IReadOnlyList<Dim>, IReadOnlyList<Blocks>, long?) Decoder(int vocab, int hidden, int intermediate, int layers,
        int heads, int kvHeads, int headDim, int maxPositions) => (
        [
            new("vocab_size", vocab, "embed_tokens.weight", 0),
            new("hidden_size", hidden, "embed_tokens.weight", 1),
            new("intermediate_size", intermediate, "layers.0.mlp.gate_proj.weight", 0),
            new("num_attention_heads × head_dim", (long)heads * headDim, "layers.0.self_attn.q_proj.weight", 0),
            new("num_key_value_heads × head_dim", (long)kvHeads * headDim, "layers.0.self_attn.k_proj.weight", 0),
        ],
        [new("num_hidden_layers", layers, "layers")],
        maxPositions);
}
