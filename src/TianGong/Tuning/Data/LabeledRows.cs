using System.Text.Json;
using System.Text.Json.Nodes;

namespace TianGong.Tuning.Data;

/// <summary>One classification example and the line it came from.</summary>
public sealed record LabeledRow(int Line, string Text, string Label);

/// <summary>
/// Classification data: JSON Lines, one <c>{"text": ..., "label": ...}</c> per line (label a string or an integer).
/// Every row is checked before anything runs; a bad one is an error naming the file, the line and the field.
/// </summary>
public static class LabeledRows
{
    public static IReadOnlyList<LabeledRow> Read(string path)
    {
        if (!File.Exists(path)) throw new TianGongException($"{path}: classification data file not found");
        var rows = new List<LabeledRow>();
        int line = 0;
        foreach (var text in File.ReadLines(path))
        {
            line++;
            if (string.IsNullOrWhiteSpace(text)) continue;
            var where = $"{path}:{line}";
            JsonNode? node;
            try { node = JsonNode.Parse(text); }
            catch (JsonException e) { throw new TianGongException($"{where}: not valid JSON ({e.Message})"); }
            if (node is not JsonObject row) throw new TianGongException($"{where}: expected a JSON object with 'text' and 'label'");
            var body = row["text"] is JsonValue t && t.TryGetValue<string>(out var s) ? s
                : throw new TianGongException($"{where}: field 'text': {(row.ContainsKey("text") ? "expected a string" : "missing")}");
            var label = row["label"] switch
            {
                JsonValue v when v.TryGetValue<string>(out var ls) && ls.Length > 0 => ls,
                JsonValue v when v.TryGetValue<long>(out var li) => li.ToString(System.Globalization.CultureInfo.InvariantCulture),
                null => throw new TianGongException($"{where}: field 'label': missing"),
                _ => throw new TianGongException($"{where}: field 'label': expected a non-empty string or an integer"),
            };
            rows.Add(new LabeledRow(line, body, label));
        }
        if (rows.Count == 0) throw new TianGongException($"{path}: no rows (expected one JSON object per line with 'text' and 'label')");
        return rows;
    }

    /// <summary>k rows of each label, drawn by <paramref name="seed"/> (the same k-shot set for the same seed), in a seeded order.</summary>
    public static IReadOnlyList<LabeledRow> SampleShots(IReadOnlyList<LabeledRow> rows, int perLabel, long seed)
    {
        var random = new Random(unchecked((int)seed));
        var picked = new List<LabeledRow>();
        foreach (var group in rows.GroupBy(r => r.Label).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            var list = group.ToList();
            if (list.Count < perLabel)
                throw new TianGongException($"--shots {perLabel}: label '{group.Key}' has only {list.Count} rows");
            picked.AddRange(list.OrderBy(_ => random.Next()).Take(perLabel));
        }
        return picked.OrderBy(_ => random.Next()).ToList();
    }
}
