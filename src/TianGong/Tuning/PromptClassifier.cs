using TianGong.Models;
using TianGong.Tokenizers;
using TianGong.Tuning.Data;

namespace TianGong.Tuning;

/// <summary>Accuracy and macro-F1 of predictions against gold labels.</summary>
public sealed record ClassificationScores(int Examples, double Accuracy, double MacroF1, IReadOnlyDictionary<string, double> F1ByLabel)
{
    public static ClassificationScores Of(IReadOnlyList<string> gold, IReadOnlyList<string> predicted, IEnumerable<string> labels)
    {
        var f1 = new Dictionary<string, double>();
        foreach (var label in labels)
        {
            int tp = 0, fp = 0, fn = 0;
            for (int i = 0; i < gold.Count; i++)
            {
                bool g = gold[i] == label, p = predicted[i] == label;
                if (g && p) tp++;
                else if (p) fp++;
                else if (g) fn++;
            }
            f1[label] = tp == 0 ? 0 : 2.0 * tp / (2 * tp + fp + fn);
        }
        double accuracy = gold.Count == 0 ? 0 : gold.Zip(predicted).Count(x => x.First == x.Second) / (double)gold.Count;
        return new ClassificationScores(gold.Count, accuracy, f1.Count == 0 ? 0 : f1.Values.Average(), f1);
    }
}

/// <summary>
/// Prompt-based classification (PET, LM-BFF) with a decoder: the text goes into a template whose mask slot ends it
/// (<c>{text}\n類別：{mask}</c>), and the label is the verbalizer word the LM finds most likely as the next token.
/// Each verbalizer word must be one token of the model's tokenizer (multi-token words are refused by name: their
/// scores would not be comparable). k-shot demonstrations, when given, go before the query, each filled with its
/// label's word (LM-BFF's demonstrations). The same rendering, with the word's token trained, makes fine-tuning rows.
/// </summary>
public sealed class PromptClassifier
{
    public const string TextSlot = "{text}", MaskSlot = "{mask}";
    private readonly string template;
    private readonly ITextTokenizer tokenizer;

    public PromptClassifier(string template, IReadOnlyDictionary<string, string> verbalizer, ITextTokenizer tokenizer)
    {
        if (!template.Contains(TextSlot, StringComparison.Ordinal)) throw new TianGongException($"--template: '{template}' has no {TextSlot} slot");
        if (!template.EndsWith(MaskSlot, StringComparison.Ordinal))
            throw new TianGongException($"--template: '{template}' must end with the {MaskSlot} slot (a decoder-only model predicts the word after the text)");
        if (verbalizer.Count < 2) throw new TianGongException("--verbalizer: give at least two labels (label=word,label=word)");
        this.template = template;
        this.tokenizer = tokenizer;
        Labels = verbalizer.Keys.ToList();
        WordIds = verbalizer.Select(kv =>
        {
            var ids = tokenizer.Encode(kv.Value);
            if (ids.Length != 1)
                throw new TianGongException($"--verbalizer: the word '{kv.Value}' for label '{kv.Key}' is {ids.Length} tokens of this tokenizer; each word must be exactly one token");
            return ids[0];
        }).ToList();
        if (WordIds.Distinct().Count() != WordIds.Count) throw new TianGongException("--verbalizer: two labels map to the same token");
        Words = verbalizer.Values.ToList();
    }

    /// <summary>Parses <c>spam=垃,ham=正</c>.</summary>
    public static IReadOnlyDictionary<string, string> ParseVerbalizer(string text)
    {
        var map = new Dictionary<string, string>();
        foreach (var pair in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int eq = pair.IndexOf('=');
            if (eq <= 0 || eq == pair.Length - 1) throw new TianGongException($"--verbalizer: '{pair}' is not label=word");
            if (!map.TryAdd(pair[..eq], pair[(eq + 1)..])) throw new TianGongException($"--verbalizer: label '{pair[..eq]}' given twice");
        }
        return map;
    }

    public IReadOnlyList<string> Labels { get; }

    public IReadOnlyList<string> Words { get; }

    /// <summary>The verbalizer words' token ids, in label order.</summary>
    public IReadOnlyList<int> WordIds { get; }

    /// <summary>The prompt up to the mask slot: demonstrations (each filled with its word), then the query.</summary>
    public string Prompt(string text, IReadOnlyList<LabeledRow>? demonstrations = null)
    {
        var sb = new System.Text.StringBuilder();
        foreach (var d in demonstrations ?? [])
            sb.Append(Fill(d.Text)).Append(Words[LabelIndex(d.Label, $"line {d.Line}")]).Append("\n\n");
        return sb.Append(Fill(text)).ToString();
    }

    /// <summary>Texts longer than this many tokens are cut to their beginning (long emails), so the prompt and the mask stay in the context.</summary>
    public int? MaxTextTokens { get; init; }

    private string Fill(string text)
    {
        if (MaxTextTokens is { } max && tokenizer.Encode(text) is { } ids && ids.Length > max)
            text = tokenizer.Decode(ids[..max]).TrimEnd('\uFFFD');
        return template[..^MaskSlot.Length].Replace(TextSlot, text, StringComparison.Ordinal);
    }

    public int LabelIndex(string label, string where) =>
        Labels.ToList().IndexOf(label) is var i and >= 0 ? i : throw new TianGongException($"{where}: label '{label}' is not in the verbalizer ({string.Join(", ", Labels)})");

    /// <summary>
    /// Log-probabilities over the verbalizer words (renormalised among them) for each text, (N, labels), from the
    /// LM's next-token distribution after the prompt. Prompts longer than the context keep their end.
    /// </summary>
    public float[][] Score(CausalLM model, IEnumerable<string> texts, IReadOnlyList<LabeledRow>? demonstrations = null)
    {
        using var _ = no_grad();
        var device = model.parameters().First().device;
        using var words = tensor(WordIds.Select(i => (long)i).ToArray(), device: device);
        int context = model.Config.ContextLength;
        var result = new List<float[]>();
        foreach (var text in texts)
        {
            using var scope = NewDisposeScope();
            var ids = tokenizer.Encode(Prompt(text, demonstrations));
            if (ids.Length > context) ids = ids[^context..];
            var logits = model.forward(tensor(ids.Select(i => (long)i).ToArray(), device: device).unsqueeze(0));   // (1, T, V)
            var last = logits[0, -1].to(ScalarType.Float32).index_select(0, words).log_softmax(0);
            result.Add(last.cpu().data<float>().ToArray());
        }
        return result.ToArray();
    }

    public IReadOnlyList<string> Predict(CausalLM model, IEnumerable<string> texts, IReadOnlyList<LabeledRow>? demonstrations = null) =>
        Score(model, texts, demonstrations).Select(s => Labels[Array.IndexOf(s, s.Max())]).ToList();

    /// <summary>Fine-tuning rows: the prompt followed by the label's word, only the word's token trained.</summary>
    public MaskedExample TrainingExample(LabeledRow row, string source)
    {
        var ids = tokenizer.Encode(Prompt(row.Text)).Append(WordIds[LabelIndex(row.Label, source)]).ToArray();
        var trained = new bool[ids.Length];
        trained[^1] = true;
        return new MaskedExample(ids, trained, source);
    }
}
