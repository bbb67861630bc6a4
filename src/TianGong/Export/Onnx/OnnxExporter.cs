using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Models;
using TianGong.Models.Bert;

namespace TianGong.Export.Onnx;

/// <summary>
/// <c>tiangong export onnx</c>: a model folder as an ONNX folder. Decoders (gpt2, llama, mistral, qwen2) get
/// <c>model.onnx</c> with past/present key-value tensors, ONNX Runtime GenAI's <c>genai_config.json</c> and the
/// tokenizer files, so the folder runs in ONNX Runtime, in ONNX Runtime GenAI and in <c>tiangong generate --onnx</c>;
/// BERT encoders get <c>model.onnx</c> with last_hidden_state and pooler_output. With 4 bits, every linear layer
/// inside the blocks is a com.microsoft MatMulNBits (int4, block 32); embeddings, norms and the LM head stay fp32.
/// </summary>
public static class OnnxExporter
{
    public const string ModelFile = "model.onnx";
    public const string GenAiConfigFile = "genai_config.json";

    /// <param name="GenAiSkipped">Why genai_config.json was not written (null when it was, or for encoders).</param>
    public sealed record Result(string ModelPath, bool ExternalData, bool IsDecoder, string? GenAiSkipped = null);

    public static Result Export(LoadedModel model, string outDir, int? bits = null, long externalDataThreshold = OnnxGraph.DefaultExternalDataThreshold)
    {
        if (bits is not (null or 4)) throw new TianGongException($"--bits: ONNX export writes fp32 or 4-bit MatMulNBits weights, got {bits}");
        if (model.Module.named_modules().Any(m => m.module is Compression.Quantization.QuantizedLinear))
            throw new TianGongException($"{model.Directory}: is GPTQ-quantized; export ONNX from the float model (--bits 4 quantizes)");
        if (Path.GetFullPath(outDir).TrimEnd('/') == Path.GetFullPath(model.Directory).TrimEnd('/'))
            throw new TianGongException($"--out: must differ from the model folder ({model.Directory})");
        Directory.CreateDirectory(outDir);
        var state = model.Module.state_dict();
        var graph = new OnnxGraph(model.Config.ModelType);
        var layers = new OnnxLayers(graph, state, bits);
        bool decoder = model.Config is not BertConfig;
        if (model.Config is BertConfig bert) OnnxBert.Build(layers, bert);
        else OnnxDecoder.Build(layers, model.Config);                                       // names an unsupported family
        bool external = graph.Save(outDir, ModelFile, externalDataThreshold);
        ModelFolder.CopyCompanionFiles(model.Directory, outDir);
        AtomicFile.Copy(Path.Combine(model.Directory, ModelFolder.ConfigFile), Path.Combine(outDir, ModelFolder.ConfigFile));
        string? skipped = null;
        if (decoder && model.Config is ICausalLMConfig { EosTokenId: { } eos } && (eos < 0 || eos >= model.Config.VocabSize))
            skipped = $"eos_token_id {eos} is outside the vocabulary (0..{model.Config.VocabSize - 1}), which ONNX Runtime GenAI refuses";
        var genAiPath = Path.Combine(outDir, GenAiConfigFile);
        if (decoder && skipped is null) ConfigJson.WriteAtomically(genAiPath, GenAiConfig((ICausalLMConfig)model.Config).ToJsonString(new() { WriteIndented = true }));
        else File.Delete(genAiPath);
        return new Result(Path.Combine(outDir, ModelFile), external, decoder, skipped);
    }

    /// <summary>
    /// ONNX Runtime GenAI's genai_config.json (onnxruntime docs/genai/reference/config.md): the model type, token ids,
    /// the decoder's file, sizes and tensor names (the %d is the layer), and greedy search defaults. Our graph's present
    /// tensors grow by T each call, so past and present do not share one buffer.
    /// </summary>
    public static JsonObject GenAiConfig(ICausalLMConfig config)
    {
        var s = DecoderShape.Of(config);
        int eos = config.EosTokenId ?? 0;
        return new JsonObject
        {
            ["model"] = new JsonObject
            {
                // GenAI's "gpt2" type expects the older combined past_N (2, B, H, S, D) layout; its "llama" type is
                // the plain decoder-only runner over separate past key/value tensors, which is what every graph here has.
                ["type"] = s.Family == "gpt2" ? "llama" : s.Family,
                ["bos_token_id"] = config.BosTokenId ?? eos,
                ["eos_token_id"] = eos,
                ["pad_token_id"] = eos,
                ["context_length"] = s.ContextLength,
                ["vocab_size"] = s.Vocab,
                ["decoder"] = new JsonObject
                {
                    ["session_options"] = new JsonObject { ["log_id"] = "onnxruntime-genai", ["provider_options"] = new JsonArray() },
                    ["filename"] = ModelFile,
                    ["head_size"] = s.HeadDim,
                    ["hidden_size"] = s.Hidden,
                    ["num_attention_heads"] = s.Heads,
                    ["num_hidden_layers"] = s.Layers,
                    ["num_key_value_heads"] = s.KvHeads,
                    ["inputs"] = new JsonObject
                    {
                        ["input_ids"] = "input_ids",
                        ["attention_mask"] = "attention_mask",
                        ["position_ids"] = "position_ids",
                        ["past_key_names"] = "past_key_values.%d.key",
                        ["past_value_names"] = "past_key_values.%d.value",
                    },
                    ["outputs"] = new JsonObject
                    {
                        ["logits"] = "logits",
                        ["present_key_names"] = "present.%d.key",
                        ["present_value_names"] = "present.%d.value",
                    },
                },
            },
            ["search"] = new JsonObject
            {
                ["diversity_penalty"] = 0.0,
                ["do_sample"] = false,
                ["early_stopping"] = true,
                ["length_penalty"] = 1.0,
                ["max_length"] = s.ContextLength,
                ["min_length"] = 0,
                ["no_repeat_ngram_size"] = 0,
                ["num_beams"] = 1,
                ["num_return_sequences"] = 1,
                ["past_present_share_buffer"] = false,
                ["repetition_penalty"] = 1.0,
                ["temperature"] = 1.0,
                ["top_k"] = 1,
                ["top_p"] = 1.0,
            },
        };
    }
}
