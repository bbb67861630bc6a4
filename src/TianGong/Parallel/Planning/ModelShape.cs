using System.Text.Json.Nodes;

namespace TianGong.Parallelism.Planning;

/// <summary>
/// What the planner needs of a decoder: its sizes, from a named preset or from a Hugging Face config.json
/// (llama/qwen2/mistral field names, or GPT-2's n_embd/n_layer/n_head).
/// </summary>
/// <param name="Ffn">Feed-forward width; <paramref name="GatedMlp"/>: three matrices (SwiGLU: gate, up, down) instead of two.</param>
/// <param name="KvHeads">Key/value heads (grouped-query attention); equal to <paramref name="Heads"/> for multi-head attention.</param>
/// <param name="DefaultGlobalBatch">The global batch (sequences) of the published run, used when --global-batch is not given.</param>
public sealed record ModelShape(string Name, int Layers, int Hidden, int Heads, int KvHeads, int Ffn, bool GatedMlp, int Vocab,
    bool TiedEmbeddings, int DefaultSeq, int DefaultGlobalBatch)
{
    /// <summary>Weights of the linear layers of one decoder layer (q, k, v, o and the MLP); norms and biases are negligible.</summary>
    public long LayerLinearParams => (long)Hidden * (2L * Hidden + 2L * Hidden * KvHeads / Heads) + (GatedMlp ? 3L : 2L) * Hidden * Ffn;

    public long LayerParams => LayerLinearParams + 2L * Hidden;

    public long EmbeddingParams => (long)Vocab * Hidden;

    public long Parameters => Layers * LayerParams + EmbeddingParams * (TiedEmbeddings ? 1 : 2) + Hidden;

    /// <summary>
    /// Published models with the sizes their papers give: GPT-3 175B (Brown et al. 2020), the 1T model of Narayanan et al.
    /// 2021 (Megatron-LM), PanGu-α 200B (Zeng et al. 2021), Llama 3.1 405B (Meta 2024), and GPT-3 13B and 6.7B.
    /// </summary>
    public static readonly IReadOnlyDictionary<string, ModelShape> Presets = new Dictionary<string, ModelShape>
    {
        ["gpt3-6.7b"] = new("gpt3-6.7b", 32, 4096, 32, 32, 16384, false, 51200, true, 2048, 1024),
        ["gpt3-13b"] = new("gpt3-13b", 40, 5140, 40, 40, 20560, false, 51200, true, 2048, 1024),
        ["gpt3-175b"] = new("gpt3-175b", 96, 12288, 96, 96, 49152, false, 51200, true, 2048, 1536),
        ["megatron-1t"] = new("megatron-1t", 128, 25600, 160, 160, 102400, false, 51200, true, 2048, 3072),
        ["pangu-alpha-200b"] = new("pangu-alpha-200b", 64, 16384, 128, 128, 65536, false, 40000, true, 1024, 1024),
        ["llama3-405b"] = new("llama3-405b", 126, 16384, 128, 8, 53248, true, 128256, false, 8192, 2048),
    };

    /// <summary>A preset name, or the path of a config.json.</summary>
    public static ModelShape Resolve(string model)
    {
        if (Presets.TryGetValue(model.ToLowerInvariant(), out var preset)) return preset;
        if (!File.Exists(model))
            throw new TianGongException($"--model: '{model}' is neither a preset ({string.Join(", ", Presets.Keys)}) nor a config.json file");
        return FromConfigJson(ConfigJson.ReadFile(model), model);
    }

    public static ModelShape FromConfigJson(JsonNode node, string path)
    {
        if (node is not JsonObject o) throw new TianGongException($"{path}: expected a JSON object");
        int? Int(params string[] names)
        {
            foreach (var n in names)
                if (o[n] is JsonValue v && v.TryGetValue<long>(out var x)) return checked((int)x);
            return null;
        }
        int Need(params string[] names) => Int(names) is { } v && v > 0 ? v
            : throw new TianGongException($"{path}: needs a positive {string.Join(" or ", names)} to plan a layout");
        int hidden = Need("hidden_size", "n_embd", "d_model");
        int layers = Need("num_hidden_layers", "n_layer", "num_layers");
        int heads = Need("num_attention_heads", "n_head");
        int vocab = Need("vocab_size");
        bool gpt2 = o["n_embd"] is not null;
        int ffn = Int("intermediate_size", "n_inner", "ffn_dim") ?? 4 * hidden;
        var type = (o["model_type"] as JsonValue)?.GetValue<string>() ?? (gpt2 ? "gpt2" : "decoder");
        bool gated = type is "llama" or "qwen2" or "mistral" or "qwen3" or "gemma" || o["hidden_act"]?.ToString() is "silu" or "swiglu";
        bool tied = o["tie_word_embeddings"] is JsonValue t ? t.GetValue<bool>() : gpt2;
        if (hidden % heads != 0) throw new TianGongException($"{path}: hidden size {hidden} is not a multiple of the {heads} attention heads");
        return new ModelShape(Path.GetFileName(Path.GetDirectoryName(Path.GetFullPath(path))) is { Length: > 0 } dir ? dir : type,
            layers, hidden, heads, Int("num_key_value_heads") ?? heads, ffn, gated, vocab, tied,
            Int("max_position_embeddings", "n_positions", "n_ctx") ?? 2048, 512);
    }
}
