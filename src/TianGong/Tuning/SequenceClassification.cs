using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Models;
using TianGong.Models.Layers;
using TianGong.Tokenizers;
using TianGong.Tuning.Data;
using TorchSharp.Modules;

namespace TianGong.Tuning;

/// <summary>
/// The classification-head baseline, as transformers' <c>LlamaForSequenceClassification</c> / <c>GPT2ForSequenceClassification</c>
/// build it: a linear <c>score</c> layer (hidden → labels, no bias, N(0, 0.02)) on the hidden state of each sequence's
/// last non-padding token. <see cref="forward"/> scores every position (B, T, labels), which is what training needs:
/// the label is the target of the last real token and every other position is ignored (-100), so right-padded
/// batches of <see cref="MaskedExampleData"/> train it with the ordinary next-token loss.
/// </summary>
public sealed class SequenceClassifier : nn.Module<Tensor, Tensor>
{
    public const string HeadFile = "score.safetensors", HeadKey = "score.weight";
    private readonly CausalLM base_model;
    private readonly Linear score;

    public SequenceClassifier(CausalLM baseModel, int labels) : base(nameof(SequenceClassifier))
    {
        if (labels < 2) throw new TianGongException($"classification head: at least two labels, got {labels}");
        base_model = baseModel;
        var first = baseModel.parameters().First();
        score = nn.Linear(baseModel.Config.ModelWidth, labels, hasBias: false, device: first.device, dtype: first.dtype);
        using (no_grad()) nn.init.normal_(score.weight!, 0, 0.02);
        RegisterComponents();
    }

    public CausalLM Base => base_model;

    public Parameter Score => score.weight!;

    public int Labels => (int)score.weight!.shape[0];

    /// <summary>Label logits (B, T, labels) at every position of right-padded (or unpadded) ids.</summary>
    public override Tensor forward(Tensor inputIds)
    {
        using var scope = NewDisposeScope();
        return score.forward(base_model.Hidden(inputIds)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Label logits (B, labels) of padded rows: <paramref name="mask"/> (B, T) marks the real tokens, on the left or the
    /// right; positions count real tokens only, and the pooled state is the rightmost real token's (transformers takes
    /// the last non-pad token the same way).
    /// </summary>
    public Tensor Classify(Tensor inputIds, Tensor mask)
    {
        using var scope = NewDisposeScope();
        long t = inputIds.shape[1];
        var positions = AttentionContext.PositionsFromMask(mask, t);
        var hidden = base_model.Hidden(new DecoderInput { InputIds = inputIds, AttentionMask = mask, PositionIds = positions });   // (B, T, C)
        var last = (arange(t, dtype: ScalarType.Int64, device: mask.device).unsqueeze(0) * mask.to(ScalarType.Int64)).argmax(1);   // (B)
        var pooled = hidden.gather(1, last.view(-1, 1, 1).expand(-1, 1, hidden.shape[2])).squeeze(1);                     // (B, C)
        return score.forward(pooled).MoveToOuterDisposeScope();
    }
}

/// <summary>Training rows, the saved folder and prediction of the classification-head baseline.</summary>
public static class SequenceClassification
{
    /// <summary>A training row: the text's tokens (cut to <paramref name="maxTokens"/>) and, as the "next token" after the last one, the label index.</summary>
    public static MaskedExample Example(ITextTokenizer tokenizer, string text, int label, int maxTokens, string source)
    {
        var ids = TextIds(tokenizer, text, maxTokens);
        var trained = new bool[ids.Length + 1];
        trained[^1] = true;
        return new MaskedExample([.. ids, label], trained, source);
    }

    /// <summary>The tokens a row is classified on: its text, cut to its first <paramref name="maxTokens"/> (an empty text becomes eos).</summary>
    public static int[] TextIds(ITextTokenizer tokenizer, string text, int maxTokens)
    {
        var ids = tokenizer.Encode(text);
        if (ids.Length == 0) ids = [Math.Max(0, tokenizer.EosId)];
        return ids.Length > maxTokens ? ids[..maxTokens] : ids;
    }

    /// <summary>
    /// A plain model folder of the fine-tuned network (any command loads it) plus <c>score.safetensors</c> (<c>score.weight</c>,
    /// (labels, hidden)); config.json gets transformers' <c>id2label</c>/<c>label2id</c>. Moving <c>score.weight</c> into
    /// model.safetensors and naming the <c>*ForSequenceClassification</c> architecture makes it a transformers folder.
    /// </summary>
    public static void Save(string sourceDir, string targetDir, SequenceClassifier classifier, IModelConfig config, IReadOnlyList<string> labels)
    {
        AdapterFolder.SavePlainModel(sourceDir, targetDir, classifier.Base, config);
        using (no_grad())
            SafeTensors.Save(Path.Combine(targetDir, SequenceClassifier.HeadFile), new Dictionary<string, Tensor> { [SequenceClassifier.HeadKey] = classifier.Score.detach().cpu() },
                new Dictionary<string, string> { ["format"] = "pt" });
        var configPath = Path.Combine(targetDir, ModelFolder.ConfigFile);
        var json = ConfigJson.ReadFile(configPath) as JsonObject ?? throw new TianGongException($"{configPath}: expected a JSON object");
        json["id2label"] = new JsonObject(labels.Select((l, i) => KeyValuePair.Create(i.ToString(System.Globalization.CultureInfo.InvariantCulture), (JsonNode?)l)));
        json["label2id"] = new JsonObject(labels.Select((l, i) => KeyValuePair.Create(l, (JsonNode?)i)));
        ConfigJson.WriteAtomically(configPath, json.ToJsonString(ConfigJson.Options) + "\n");
    }

    /// <summary>The head of a folder written by <see cref="Save"/> on its model, with its labels in id order; null when the folder has no head.</summary>
    public static (SequenceClassifier Classifier, IReadOnlyList<string> Labels)? Load(LoadedModel loaded)
    {
        var headPath = Path.Combine(loaded.Directory, SequenceClassifier.HeadFile);
        if (!File.Exists(headPath)) return null;
        var configPath = Path.Combine(loaded.Directory, ModelFolder.ConfigFile);
        var json = ConfigJson.ReadFile(configPath) as JsonObject;
        if (json?["id2label"] is not JsonObject id2label) throw new TianGongException($"{configPath}: a folder with {SequenceClassifier.HeadFile} needs 'id2label'");
        var labels = new List<string>();
        for (int i = 0; i < id2label.Count; i++)
            labels.Add(id2label[i.ToString(System.Globalization.CultureInfo.InvariantCulture)] is JsonValue v && v.TryGetValue<string>(out var s)
                ? s : throw new TianGongException($"{configPath}: id2label has no string for id {i}"));
        var model = loaded.AsCausalLM("the classification head");
        using var file = SafeTensorsFile.Open(headPath);
        if (!file.Keys.Contains(SequenceClassifier.HeadKey)) throw new TianGongException($"{headPath}: no '{SequenceClassifier.HeadKey}' tensor");
        var shape = file.GetInfo(SequenceClassifier.HeadKey).Shape;
        if (shape.Count != 2 || shape[0] != labels.Count || shape[1] != model.Config.ModelWidth)
            throw new TianGongException($"{headPath}: '{SequenceClassifier.HeadKey}' has shape [{string.Join(", ", shape)}] but {labels.Count} labels on hidden size {model.Config.ModelWidth} need [{labels.Count}, {model.Config.ModelWidth}]");
        var classifier = new SequenceClassifier(model, labels.Count);
        using (no_grad())
        using (var weight = file.Read(SequenceClassifier.HeadKey))
            classifier.Score.copy_(weight);
        return (classifier, labels);
    }

    /// <summary>The predicted label of each text, in batches of right-padded rows.</summary>
    public static IReadOnlyList<string> Predict(SequenceClassifier classifier, ITextTokenizer tokenizer, IReadOnlyList<string> labels, IEnumerable<string> texts, int maxTokens, int batchSize = 8)
    {
        using var _ = no_grad();
        classifier.eval();
        var device = classifier.Score.device;
        maxTokens = Math.Min(maxTokens, classifier.Base.Config.ContextLength);
        var predicted = new List<string>();
        foreach (var chunk in texts.Select(t => TextIds(tokenizer, t, maxTokens)).Chunk(batchSize))
        {
            using var scope = NewDisposeScope();
            int t = chunk.Max(r => r.Length);
            var ids = chunk.SelectMany(r => r.Select(i => (long)i).Concat(Enumerable.Repeat(0L, t - r.Length))).ToArray();
            var mask = chunk.SelectMany(r => Enumerable.Repeat(1L, r.Length).Concat(Enumerable.Repeat(0L, t - r.Length))).ToArray();
            var logits = classifier.Classify(tensor(ids, [chunk.Length, t], device: device), tensor(mask, [chunk.Length, t], device: device));
            predicted.AddRange(logits.argmax(1).cpu().data<long>().Select(i => labels[(int)i]));
        }
        return predicted;
    }
}
