using Microsoft.ML.OnnxRuntime;
using TianGong.Inference;
using TianGong.Tokenizers;

namespace TianGong.Export.Onnx;

/// <summary>
/// An exported decoder folder run by ONNX Runtime: the graph does the model's arithmetic (libtorch only chooses tokens,
/// in the shared decoding core). Each call feeds the new tokens, the attention
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
    /// Decodes one prompt: the prompt in one call, then one token per call through the cache. The graph does the
    /// arithmetic; each step's last logits go to the decoding core every generator shares (<see cref="DecodingSequence"/>,
    /// called as <see cref="TextGenerator"/> calls it), so sampling, penalties, constraints, stop rules and the vocabulary
    /// limit are the same as <c>generate --model</c>'s, and an end-of-sequence token ends the output without joining it.
    /// End-of-sequence is the tokenizer's, else config.json's. The caller disposes the returned sequence.
    /// </summary>
    public DecodingSequence Decode(IReadOnlyList<int> prompt, SamplingOptions options, ITextTokenizer? tokenizer = null, ITokenConstraint? constraint = null)
    {
        options.Validate();
        if (prompt.Count == 0) throw new TianGongException("generate --onnx: the prompt has no tokens");
        DecodingSequence.CheckIds(prompt, Vocab, "prompt");
        if (prompt.Count >= ContextLength)
            throw new TianGongException($"prompt of {prompt.Count} tokens leaves no room in the model's context of {ContextLength}");
        int? eos = tokenizer?.EosId ?? EosTokenId;
        var rowOptions = options with { MaxNewTokens = Math.Min(options.MaxNewTokens, ContextLength - prompt.Count) };
        var sequence = new DecodingSequence(rowOptions, Vocab, eos is { } e ? [e] : [], tokenizer, prompt, constraint);
        try
        {
            Reset(1);
            long[] ids = [.. prompt.Select(i => (long)i)];
            long[] positions = [.. Enumerable.Range(0, prompt.Count).Select(i => (long)i)];
            while (!sequence.IsFinished)
            {
                var logits = Forward(ids, Enumerable.Repeat(1L, PastLength + ids.Length).ToArray(), positions, 1);
                using var scope = NewDisposeScope();
                var last = tensor(logits[^Vocab..], [1, Vocab]);                                    // (1, V)
                var (step, error) = DecodingSequence.StepRows([sequence], last)[0];
                if (error is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(error);
                (ids, positions) = ([step!.Token], [PastLength]);
            }
            return sequence;
        }
        catch
        {
            sequence.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        foreach (var v in past) v.Dispose();
        runOptions.Dispose();
        session.Dispose();
    }
}
