using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Models;
using TianGong.Models.Llama;
using TianGong.Models.Mistral;
using TianGong.Models.Qwen2;

namespace TianGong.Export.Gguf;

/// <summary>
/// Writes a Llama-style model (llama, mistral, qwen2) as the GGUF file llama.cpp and Ollama run, following
/// llama.cpp's convert_hf_to_gguf.py: its metadata keys, its tensor names (<c>blk.N.attn_q.weight</c>), Q and K rows
/// permuted from Hugging Face's half-split rotary layout to ggml's interleaved one for the llama architecture (qwen2
/// runs NeoX-style rotary in llama.cpp, so it keeps HF's), norms and biases in F32, and the byte-level BPE tokenizer
/// embedded (tokens, token types, merges, special ids).
/// </summary>
public static class GgufExporter
{
    private sealed record Dims(string Arch, int Hidden, int Intermediate, int Layers, int Heads, int KvHeads, int HeadDim,
        int Context, double RmsEps, double RopeTheta, bool Tied, int Vocab, int? Bos, int? Eos);

    public static GgmlType ParseType(string text) => text switch
    {
        "f32" => GgmlType.F32,
        "f16" => GgmlType.F16,
        "q8_0" => GgmlType.Q8_0,
        "q4_0" => GgmlType.Q4_0,
        _ => throw new TianGongException($"--type: must be f32, f16, q8_0 or q4_0, got '{text}'"),
    };

    public static void Export(LoadedModel model, string path, GgmlType type)
    {
        var d = Describe(model.Config);
        if (model.Module.named_modules().Any(m => m.module is Compression.Quantization.QuantizedLinear))
            throw new TianGongException($"{model.Directory}: is GPTQ-quantized; export GGUF from the float model (--type q8_0/q4_0 quantizes)");
        var metadata = Metadata(d, model.Directory, type);
        metadata.AddRange(Tokenizer(model.Directory, d));
        var state = model.Module.state_dict();
        var tensors = new List<GgufTensor>();
        foreach (var (key, value) in state)
        {
            var name = GgufName(key, d) ?? throw new TianGongException($"{model.Directory}: tensor '{key}' has no GGUF name (export covers llama, mistral, qwen2)");
            var shape = value.shape;
            var tensorType = shape.Length == 2 && (type == GgmlType.F32 || shape[1] % GgmlQuants.BlockSize == 0 || type == GgmlType.F16) ? type
                : shape.Length == 2 ? GgmlType.F16 : GgmlType.F32;
            var source = value;
            tensors.Add(new GgufTensor(name, shape, tensorType, () =>
            {
                using var scope = NewDisposeScope();
                var w = source.detach().to(ScalarType.Float32);
                if (d.Arch == "llama" && key.EndsWith("q_proj.weight")) w = PermuteForGgml(w, d.Heads);
                if (d.Arch == "llama" && key.EndsWith("k_proj.weight")) w = PermuteForGgml(w, d.KvHeads);
                return GgmlQuants.Encode(tensorType, w.contiguous().data<float>().ToArray());
            }));
        }
        GgufWriter.Write(path, metadata, tensors);
    }

    /// <summary>
    /// convert_hf_to_gguf's permute: each head's rows (2, headDim/2) → (headDim/2, 2), turning HF's rotate-half pairs
    /// (i, i + d/2) into ggml's adjacent pairs (2i, 2i + 1).
    /// </summary>
    public static Tensor PermuteForGgml(Tensor w, int heads) =>
        w.reshape(heads, 2, w.shape[0] / heads / 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape);

    private static Dims Describe(IModelConfig config) => config switch
    {
        LlamaConfig c => new("llama", c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers, c.NumAttentionHeads, c.KeyValueHeads, c.HeadSize,
            c.MaxPositionEmbeddings, c.RmsNormEps, c.Rope.RopeTheta!.Value, c.TieWordEmbeddings, c.VocabSize, c.BosTokenId, c.EosTokenId),
        MistralConfig c => new("llama", c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers, c.NumAttentionHeads, c.KeyValueHeads, c.HeadSize,
            c.MaxPositionEmbeddings, c.RmsNormEps, c.Rope.RopeTheta!.Value, c.TieWordEmbeddings, c.VocabSize, c.BosTokenId, c.EosTokenId),
        Qwen2Config c => new("qwen2", c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers, c.NumAttentionHeads, c.KeyValueHeads, c.HeadSize,
            c.MaxPositionEmbeddings, c.RmsNormEps, c.Rope.RopeTheta!.Value, c.TieWordEmbeddings, c.VocabSize, c.BosTokenId, c.EosTokenId),
        _ => throw new TianGongException($"GGUF export covers llama, mistral and qwen2; model_type '{config.ModelType}' is not one of them"),
    };

    private static string? GgufName(string key, Dims d)
    {
        if (key == "model.embed_tokens.weight") return "token_embd.weight";
        if (key == "model.norm.weight") return "output_norm.weight";
        if (key == "lm_head.weight") return "output.weight";
        var m = System.Text.RegularExpressions.Regex.Match(key, @"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$");
        if (!m.Success) return null;
        string? part = m.Groups[2].Value switch
        {
            "input_layernorm" => "attn_norm",
            "self_attn.q_proj" => "attn_q",
            "self_attn.k_proj" => "attn_k",
            "self_attn.v_proj" => "attn_v",
            "self_attn.o_proj" => "attn_output",
            "post_attention_layernorm" => "ffn_norm",
            "mlp.gate_proj" => "ffn_gate",
            "mlp.up_proj" => "ffn_up",
            "mlp.down_proj" => "ffn_down",
            _ => null,
        };
        return part is null ? null : $"blk.{m.Groups[1].Value}.{part}.{m.Groups[3].Value}";
    }

    private static List<(string, GgufValueType, object)> Metadata(Dims d, string dir, GgmlType type)
    {
        var a = d.Arch;
        var list = new List<(string, GgufValueType, object)>
        {
            ("general.architecture", GgufValueType.String, a),
            ("general.name", GgufValueType.String, Path.GetFileName(Path.GetFullPath(dir).TrimEnd('/'))),
            ("general.alignment", GgufValueType.UInt32, (uint)GgufWriter.Alignment),
            // llama_ftype: ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q4_0 2, MOSTLY_Q8_0 7.
            ("general.file_type", GgufValueType.UInt32, type switch { GgmlType.F32 => 0u, GgmlType.F16 => 1u, GgmlType.Q4_0 => 2u, _ => 7u }),
            ("general.quantization_version", GgufValueType.UInt32, 2u),
            ($"{a}.vocab_size", GgufValueType.UInt32, (uint)d.Vocab),
            ($"{a}.context_length", GgufValueType.UInt32, (uint)d.Context),
            ($"{a}.embedding_length", GgufValueType.UInt32, (uint)d.Hidden),
            ($"{a}.block_count", GgufValueType.UInt32, (uint)d.Layers),
            ($"{a}.feed_forward_length", GgufValueType.UInt32, (uint)d.Intermediate),
            ($"{a}.attention.head_count", GgufValueType.UInt32, (uint)d.Heads),
            ($"{a}.attention.head_count_kv", GgufValueType.UInt32, (uint)d.KvHeads),
            ($"{a}.attention.layer_norm_rms_epsilon", GgufValueType.Float32, (float)d.RmsEps),
            ($"{a}.rope.freq_base", GgufValueType.Float32, (float)d.RopeTheta),
            ($"{a}.rope.dimension_count", GgufValueType.UInt32, (uint)d.HeadDim),
        };
        if (d.HeadDim * d.Heads != d.Hidden)
        {
            list.Add(($"{a}.attention.key_length", GgufValueType.UInt32, (uint)d.HeadDim));
            list.Add(($"{a}.attention.value_length", GgufValueType.UInt32, (uint)d.HeadDim));
        }
        return list;
    }

    /// <summary>
    /// The tokenizer as llama.cpp reads it ("gpt2" = byte-level BPE): every id's token text (gaps filled with
    /// [PADn], UNUSED), token types (1 normal, 3 control for special added tokens, 4 user-defined for others, 5
    /// unused), merges as "a b", and the special ids. tokenizer.ggml.pre names the pre-tokenizer's regex: "gpt-2" for
    /// the plain ByteLevel one, "qwen2" for Qwen2's.
    /// </summary>
    private static IEnumerable<(string, GgufValueType, object)> Tokenizer(string dir, Dims d)
    {
        var path = Path.Combine(dir, "tokenizer.json");
        if (!File.Exists(path))
            throw new TianGongException($"{dir}: no tokenizer.json; llama.cpp needs the tokenizer inside the GGUF file");
        var json = ConfigJson.ReadFile(path);
        if ((string?)json["model"]?["type"] != "BPE" || json["model"]?["vocab"] is not JsonObject vocab)
            throw new TianGongException($"{path}: GGUF export embeds byte-level BPE tokenizers; this one is '{json["model"]?["type"]}'");
        var tokens = new string?[d.Vocab];
        var types = new int[d.Vocab];
        foreach (var (token, id) in vocab)
            if ((int)id! is var i && i < d.Vocab) (tokens[i], types[i]) = (token, 1);
        foreach (var added in json["added_tokens"] as JsonArray ?? [])
            if ((int)added!["id"]! is var i && i < d.Vocab)
                (tokens[i], types[i]) = ((string)added["content"]!, (bool?)added["special"] == true ? 3 : 4);
        for (int i = 0; i < d.Vocab; i++)
            if (tokens[i] is null) (tokens[i], types[i]) = ($"[PAD{i}]", 5);
        var merges = (json["model"]!["merges"] as JsonArray ?? []).Select(m => m is JsonArray pair ? $"{pair[0]} {pair[1]}" : (string)m!).ToList<object>();
        var pre = d.Arch == "qwen2" ? "qwen2" : "gpt-2";
        yield return ("tokenizer.ggml.model", GgufValueType.String, "gpt2");
        yield return ("tokenizer.ggml.pre", GgufValueType.String, pre);
        yield return ("tokenizer.ggml.tokens", GgufValueType.Array, (GgufValueType.String, (System.Collections.IList)tokens.Select(t => (object)t!).ToList()));
        yield return ("tokenizer.ggml.token_type", GgufValueType.Array, (GgufValueType.Int32, (System.Collections.IList)types.Cast<object>().ToList()));
        yield return ("tokenizer.ggml.merges", GgufValueType.Array, (GgufValueType.String, (System.Collections.IList)merges));
        if (d.Bos is { } bos) yield return ("tokenizer.ggml.bos_token_id", GgufValueType.UInt32, (uint)bos);
        if (d.Eos is { } eos) yield return ("tokenizer.ggml.eos_token_id", GgufValueType.UInt32, (uint)eos);
        yield return ("tokenizer.ggml.add_bos_token", GgufValueType.Bool, false);
    }
}
