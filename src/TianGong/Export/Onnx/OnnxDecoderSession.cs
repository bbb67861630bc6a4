using Microsoft.ML.OnnxRuntime;

namespace TianGong.Export.Onnx;

/// <summary>
/// An exported decoder folder run by ONNX Runtime, with no libtorch: each call feeds the new tokens, the attention
/// mask over past + new positions, their position ids and the past keys and values, and keeps the graph's present
/// tensors as the next call's past (no copy: ONNX Runtime's output values become the next inputs).
/// </summary>
public sealed class OnnxDecoderSession : IDisposable
{
    private readonly InferenceSession session;
    private readonly RunOptions runOptions = new();
    private readonly string[] inputNames, outputNames;
    private OrtValue[] past;

    private OnnxDecoderSession(InferenceSession session, int layers, int kvHeads, int headDim, int vocab, int? eos, int contextLength)
    {
        this.session = session;
        (Layers, KvHeads, HeadDim, Vocab, EosTokenId, ContextLength) = (layers, kvHeads, headDim, vocab, eos, contextLength);
        var pastNames = Enumerable.Range(0, layers).SelectMany(i => new[] { $"past_key_values.{i}.key", $"past_key_values.{i}.value" });
        inputNames = ["input_ids", "attention_mask", "position_ids", .. pastNames];
        outputNames = ["logits", .. Enumerable.Range(0, layers).SelectMany(i => new[] { $"present.{i}.key", $"present.{i}.value" })];
        past = [];
    }

    public int Layers { get; }
    public int KvHeads { get; }
    public int HeadDim { get; }
    public int Vocab { get; }
    public int? EosTokenId { get; }
    public int ContextLength { get; }

    /// <summary>Positions cached so far (the past length every row shares).</summary>
    public int PastLength { get; private set; }

    /// <summary>
    /// Opens <c>dir/model.onnx</c>: layer count, key-value heads, head size and vocabulary from the graph's inputs and
    /// outputs; end-of-text id and context length from the config.json exported beside it.
    /// </summary>
    public static OnnxDecoderSession Open(string dir, int intraOpThreads = 0)
    {
        var modelPath = Path.Combine(dir, OnnxExporter.ModelFile);
        var configPath = Path.Combine(dir, Checkpoints.ModelFolder.ConfigFile);
        if (!File.Exists(modelPath) || !File.Exists(configPath))
            throw new TianGongException($"{dir}: not an exported ONNX decoder folder (needs {OnnxExporter.ModelFile} and config.json; run tiangong export onnx)");
        if (Models.ModelConfigs.Parse(ConfigJson.ReadFile(configPath), configPath, strict: false) is not Models.ICausalLMConfig config)
            throw new TianGongException($"{dir}: holds an encoder; generate needs a decoder-only model");
        using var options = new SessionOptions { IntraOpNumThreads = intraOpThreads, GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
        // Idle intra-op threads sleep instead of spinning, as libtorch's do here (TorchRuntime: OMP_WAIT_POLICY=PASSIVE):
        // on a shared machine spinning threads steal the cores the busy ones need.
        options.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
        InferenceSession session;
        try { session = new InferenceSession(modelPath, options); }
        catch (OnnxRuntimeException e) { throw new TianGongException($"{modelPath}: ONNX Runtime cannot load it: {e.Message}"); }
        int layers = session.InputMetadata.Keys.Count(k => k.StartsWith("past_key_values.") && k.EndsWith(".key"));
        if (layers == 0 || !session.OutputMetadata.ContainsKey("logits"))
        {
            session.Dispose();
            throw new TianGongException($"{modelPath}: has no past_key_values inputs or logits output; not a decoder exported with its cache");
        }
        var past = session.InputMetadata["past_key_values.0.key"].Dimensions;                   // (B, Hkv, past, D)
        int vocab = session.OutputMetadata["logits"].Dimensions[2];
        return new OnnxDecoderSession(session, layers, past[1], past[3], vocab, config.EosTokenId, config.ContextLength);
    }

    /// <summary>Forgets the cache: the next call starts <paramref name="batch"/> new sequences.</summary>
    public void Reset(int batch)
    {
        foreach (var v in past) v.Dispose();
        past = new OrtValue[2 * Layers];
        for (int i = 0; i < past.Length; i++)
            past[i] = OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), [batch, KvHeads, 0, HeadDim]);
        PastLength = 0;
    }

    /// <summary>
    /// One forward call: <paramref name="ids"/> and <paramref name="positions"/> (B, T) row-major, <paramref name="mask"/>
    /// (B, past + T). Returns the logits (B, T, V) row-major; the cache grows by T.
    /// </summary>
    public float[] Forward(long[] ids, long[] mask, long[] positions, int batch)
    {
        if (past.Length == 0) Reset(batch);
        int t = ids.Length / batch;
        if (mask.Length != batch * (PastLength + t))
            throw new TianGongException($"attention_mask: expected {batch} × {PastLength + t} values, got {mask.Length}");
        using var idsValue = OrtValue.CreateTensorValueFromMemory(ids, [batch, t]);
        using var maskValue = OrtValue.CreateTensorValueFromMemory(mask, [batch, PastLength + t]);
        using var positionValue = OrtValue.CreateTensorValueFromMemory(positions, [batch, t]);
        var outputs = session.Run(runOptions, inputNames, [idsValue, maskValue, positionValue, .. past], outputNames);
        var logits = outputs[0].GetTensorDataAsSpan<float>().ToArray();
        outputs[0].Dispose();
        foreach (var v in past) v.Dispose();
        past = [.. outputs.Skip(1)];                                                        // present → next past (owned here now)
        PastLength += t;
        return logits;
    }

    /// <summary>
    /// Greedy decoding of one prompt: the prompt in one call, then one token per call through the cache; stops at
    /// end-of-text. <paramref name="vocabLimit"/>: only ids below it are chosen (a tokenizer smaller than the
    /// model's vocabulary has no text for the rest), as our own decoding loop does.
    /// </summary>
    public List<int> GenerateGreedy(IReadOnlyList<int> prompt, int maxNewTokens, int? eos = null, int? vocabLimit = null)
    {
        if (prompt.Count == 0) throw new TianGongException("generate --onnx: the prompt has no tokens");
        eos ??= EosTokenId;
        Reset(1);
        var generated = new List<int>();
        long[] ids = [.. prompt.Select(i => (long)i)];
        long[] positions = [.. Enumerable.Range(0, prompt.Count).Select(i => (long)i)];
        for (int step = 0; step < maxNewTokens && PastLength + ids.Length <= ContextLength; step++)
        {
            var logits = Forward(ids, Enumerable.Repeat(1L, PastLength + ids.Length).ToArray(), positions, 1);
            int next = ArgMax(logits.AsSpan(logits.Length - Vocab, Math.Min(Vocab, vocabLimit ?? Vocab)));
            generated.Add(next);
            if (next == eos) break;
            (ids, positions) = ([next], [PastLength]);
        }
        return generated;
    }

    private static int ArgMax(ReadOnlySpan<float> values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++) if (values[i] > values[best]) best = i;
        return best;
    }

    public void Dispose()
    {
        foreach (var v in past) v.Dispose();
        runOptions.Dispose();
        session.Dispose();
    }
}
