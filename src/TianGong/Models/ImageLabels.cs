namespace TianGong.Models;

/// <summary>
/// How many classes an image-classification config.json declares. transformers derives num_labels from
/// <c>id2label</c> (and writes only that); a hand-written config may give <c>num_labels</c> alone, as PretrainedConfig accepts.
/// </summary>
public static class ImageLabels
{
    /// <summary>transformers' PretrainedConfig default when neither field is given.</summary>
    public const int DefaultCount = 2;

    public static int Count(IReadOnlyDictionary<string, string>? id2Label, int? numLabels) =>
        numLabels ?? id2Label?.Count ?? DefaultCount;

    /// <summary>Both fields agree, and every id2label key is one of 0..n-1.</summary>
    public static void Validate(IReadOnlyDictionary<string, string>? id2Label, int? numLabels)
    {
        if (numLabels is { } n) ConfigChecks.Positive("num_labels", n);
        if (id2Label is null) return;
        if (numLabels is { } m && m != id2Label.Count)
            throw new TianGongException($"num_labels: {m} disagrees with id2label, which names {id2Label.Count} classes");
        for (int i = 0; i < id2Label.Count; i++)
            if (!id2Label.ContainsKey(i.ToString(System.Globalization.CultureInfo.InvariantCulture)))
                throw new TianGongException($"id2label: must map every class id 0..{id2Label.Count - 1}, but '{i}' is missing");
    }
}
