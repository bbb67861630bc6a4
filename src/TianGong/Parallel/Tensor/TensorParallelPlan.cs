using TianGong.Models;
using TianGong.Models.Gpt2;
using TianGong.Models.Layers;
using TianGong.Models.Llama;
using TianGong.Models.Mistral;
using TianGong.Models.Qwen2;
using TianGong.Parallelism.Communication;
using TorchSharp.Modules;

namespace TianGong.Parallelism.TensorParallel;

/// <summary>
/// Which layers of a family are split over the tensor-parallel ranks and how, keyed by Hugging Face module names as
/// transformers' <c>base_model_tp_plan</c> is (<c>"model.layers.*.self_attn.q_proj": "colwise"</c>). Styles:
/// <list type="bullet">
/// <item><c>colwise</c>: output features split (<see cref="ColumnParallelLinear"/>): q, k, v, gate, up, GPT-2's c_fc;</item>
/// <item><c>colwise_qkv</c>: GPT-2's fused c_attn, each of its q, k, v thirds split alike so a rank holds whole heads;</item>
/// <item><c>rowwise</c>: input features split (<see cref="RowParallelLinear"/>): o, down, GPT-2's c_proj;</item>
/// <item><c>vocab</c>: rows of the token embedding or LM head split by vocabulary (<see cref="TensorParallelCausalLM"/>
/// does the vocabulary-parallel lookup and cross-entropy).</item>
/// </list>
/// Everything else (norms, position embeddings, the biases of row-parallel layers) is replicated on every rank.
/// </summary>
/// <param name="Layers">Module name pattern (<c>*</c>: any run of characters) → style, applied in this order.</param>
/// <param name="Heads">Attention heads, and key-value heads: both must divide by tp so each rank runs whole heads.</param>
public sealed record TensorParallelPlan(IReadOnlyList<KeyValuePair<string, string>> Layers, int Heads, int KeyValueHeads)
{
    public const string Colwise = "colwise", ColwiseQkv = "colwise_qkv", Rowwise = "rowwise", Vocab = "vocab";

    private static readonly KeyValuePair<string, string>[] DecoderLayers =
    [
        new("model.embed_tokens", Vocab),
        new("model.layers.*.self_attn.q_proj", Colwise),
        new("model.layers.*.self_attn.k_proj", Colwise),
        new("model.layers.*.self_attn.v_proj", Colwise),
        new("model.layers.*.self_attn.o_proj", Rowwise),
        new("model.layers.*.mlp.gate_proj", Colwise),
        new("model.layers.*.mlp.up_proj", Colwise),
        new("model.layers.*.mlp.down_proj", Rowwise),
        new("lm_head", Vocab),
    ];

    private static readonly KeyValuePair<string, string>[] Gpt2Layers =
    [
        new("transformer.wte", Vocab),
        new("transformer.h.*.attn.c_attn", ColwiseQkv),
        new("transformer.h.*.attn.c_proj", Rowwise),
        new("transformer.h.*.mlp.c_fc", Colwise),
        new("transformer.h.*.mlp.c_proj", Rowwise),
        new("lm_head", Vocab),
    ];

    /// <summary>The token embedding's module name: the first <c>vocab</c> layer (the LM head, when untied, is the second).</summary>
    public string TokenEmbedding => Layers.First(l => l.Value == Vocab).Key;

    /// <summary>The plan of a family, or an error naming the families that have one.</summary>
    public static TensorParallelPlan For(ICausalLMConfig config) => config switch
    {
        Gpt2Config c => new(Gpt2Layers, c.NHead, c.NHead),
        LlamaConfig c => new(DecoderLayers, c.NumAttentionHeads, c.KeyValueHeads),
        MistralConfig c => new(DecoderLayers, c.NumAttentionHeads, c.KeyValueHeads),
        Qwen2Config c => new(DecoderLayers, c.NumAttentionHeads, c.KeyValueHeads),
        _ => throw new TianGongException($"parallel.tp: no tensor-parallel plan for model_type '{config.ModelType}' (plans exist for gpt2, llama, mistral, qwen2)"),
    };

    /// <summary>
    /// Replaces the planned layers of the whole <paramref name="model"/> by this rank's shards, in place, and returns how
    /// each split parameter (by state-dict name) is laid out over the ranks.
    /// </summary>
    public Dictionary<string, ShardLayout> Apply(CausalLM model, ICommunicator group)
    {
        int rank = group.Rank, ranks = group.Size;
        if (Heads % ranks != 0 || KeyValueHeads % ranks != 0)
            throw new TianGongException($"parallel.tp={ranks}: each rank must run whole attention heads, but the model has {Heads} heads and {KeyValueHeads} key-value heads (tp must divide both)");
        var layouts = new Dictionary<string, ShardLayout>();
        var linear = LayerReplacement.LinearLayerNames(model);
        foreach (var (pattern, style) in Layers)
        {
            var selector = new LayerSelector([pattern]);
            if (style == Vocab && ShardEmbedding(model, pattern, rank, ranks) is { } embedding)
            {
                layouts[pattern + ".weight"] = embedding;
                continue;
            }
            if (!linear.Any(selector.Matches))
            {
                if (pattern == "lm_head") continue; // tied: the LM head is the (already split) embedding
                throw new TianGongException($"parallel.tp: the plan's layer '{pattern}' matches nothing in this {model.Config.ModelType} model");
            }
            LayerReplacement.Replace(model, selector, (name, whole) =>
            {
                switch (style)
                {
                    case Colwise or ColwiseQkv:
                        var (columns, weight, bias) = LinearShards.Columns(whole, rank, ranks, style == ColwiseQkv ? 3 : 1);
                        layouts[name + ".weight"] = weight;
                        if (bias is not null) layouts[name + ".bias"] = bias;
                        return new ColumnParallelLinear(columns, group);
                    case Rowwise:
                        var (rows, rowWeight) = LinearShards.Rows(whole, rank, ranks);
                        layouts[name + ".weight"] = rowWeight;
                        return new RowParallelLinear(rows, group);
                    case Vocab:
                        // An untied LM head: this rank's vocabulary rows, a plain projection to its slice of the logits.
                        if (whole.Bias is not null) throw new TianGongException($"parallel.tp: {name} has a bias; a vocabulary-parallel head has none");
                        var (vocabRows, vocabWeight, _) = LinearShards.Columns(whole, rank, ranks);
                        layouts[name + ".weight"] = vocabWeight;
                        return Projections.FromParts(vocabRows);
                    default:
                        throw new TianGongException($"parallel.tp: unknown style '{style}' for '{pattern}' (known: {Colwise}, {ColwiseQkv}, {Rowwise}, {Vocab})");
                }
            });
        }
        return layouts;
    }

    /// <summary>Splits an Embedding's rows in place; null when <paramref name="name"/> is not an embedding of the model.</summary>
    private static ShardLayout? ShardEmbedding(CausalLM model, string name, int rank, int ranks)
    {
        var module = model.named_modules().FirstOrDefault(m => m.name == name).module;
        if (module is not EmbeddingTable embedding) return null;
        var whole = embedding.weight!;
        var layout = new ShardLayout(0, whole.shape[0]);
        if (layout.Range(ranks - 1, ranks).Length <= 0)
            throw new TianGongException($"parallel.tp={ranks}: a vocabulary of {whole.shape[0]} tokens leaves the last rank no rows; use a smaller tp");
        using var _ = no_grad();
        embedding.weight = new Parameter(layout.Slice(whole, rank, ranks));
        return layout;
    }
}
