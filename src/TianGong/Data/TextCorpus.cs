using System.Collections;
using System.Text;
using System.Text.Json;

namespace TianGong.Data;

/// <param name="JsonField">The string field that holds a document in each JSONL record.</param>
public sealed record TextCorpusOptions(string JsonField = "text");

/// <summary>
/// Documents from plain text or JSONL files, read line by line.
/// Plain text (any extension but .jsonl/.ndjson): documents are separated by one or more blank lines;
/// a document's lines are joined with '\n'. JSONL: one JSON object per line, the document is its
/// <see cref="TextCorpusOptions.JsonField"/> string; blank lines and empty strings are skipped.
/// A directory is read recursively (.txt, .jsonl, .ndjson), files in ordinal path order.
/// </summary>
public sealed class TextCorpus : ICorpus
{
    private readonly string path;
    private readonly TextCorpusOptions options;
    private readonly IReadOnlyList<string> files;

    public TextCorpus(string path, TextCorpusOptions? options = null)
    {
        this.path = path;
        this.options = options ?? new TextCorpusOptions();
        files = ListFiles(path);
    }

    public string Source => Path.GetFullPath(path);

    public IReadOnlyList<string> Files => files;

    public IEnumerator<string> GetEnumerator()
    {
        foreach (var file in files)
        {
            var documents = IsJsonLines(file) ? ReadJsonLines(file) : ReadParagraphs(file);
            foreach (var document in documents) yield return document;
        }
    }

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    private static bool IsJsonLines(string file) =>
        file.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase) || file.EndsWith(".ndjson", StringComparison.OrdinalIgnoreCase);

    private static IEnumerable<string> ReadParagraphs(string file)
    {
        var document = new StringBuilder();
        foreach (var line in File.ReadLines(file))
        {
            if (string.IsNullOrWhiteSpace(line))
            {
                if (document.Length > 0) yield return document.ToString();
                document.Clear();
                continue;
            }
            if (document.Length > 0) document.Append('\n');
            document.Append(line);
        }
        if (document.Length > 0) yield return document.ToString();
    }

    private IEnumerable<string> ReadJsonLines(string file)
    {
        var lineNumber = 0;
        foreach (var line in File.ReadLines(file))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            var text = ReadField(line, file, lineNumber);
            if (!string.IsNullOrEmpty(text)) yield return text;
        }
    }

    private string? ReadField(string line, string file, int lineNumber)
    {
        try
        {
            using var record = JsonDocument.Parse(line);
            if (record.RootElement.ValueKind == JsonValueKind.Object
                && record.RootElement.TryGetProperty(options.JsonField, out var field)
                && field.ValueKind == JsonValueKind.String)
                return field.GetString();
        }
        catch (JsonException e)
        {
            throw new TianGongException($"'{file}' line {lineNumber} is not valid JSON: {e.Message}", e);
        }
        // A missing field is almost always the wrong --field option, not a record to skip quietly.
        throw new TianGongException($"'{file}' line {lineNumber} has no string field '{options.JsonField}'.");
    }

    private static List<string> ListFiles(string path)
    {
        if (File.Exists(path)) return [path];
        if (!Directory.Exists(path)) throw new TianGongException($"Corpus path '{path}' is neither a file nor a directory.");
        var found = Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories)
            .Where(f => f.EndsWith(".txt", StringComparison.OrdinalIgnoreCase) || IsJsonLines(f))
            .Order(StringComparer.Ordinal)
            .ToList();
        if (found.Count == 0) throw new TianGongException($"No .txt, .jsonl or .ndjson files under '{path}'.");
        return found;
    }
}
