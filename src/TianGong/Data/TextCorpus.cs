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
        foreach (var line in ReadLines(file))
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
        foreach (var line in ReadLines(file))
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

    /// <summary>
    /// Lines of strict UTF-8 text: a file in another encoding is refused with the line it breaks on, rather than read
    /// as replacement characters and trained on.
    /// </summary>
    private static IEnumerable<string> ReadLines(string file)
    {
        using var reader = new StreamReader(file, StrictUtf8, detectEncodingFromByteOrderMarks: false);
        long lineNumber = 0;
        while (true)
        {
            string? line;
            try
            {
                line = reader.ReadLine();
            }
            catch (DecoderFallbackException)
            {
                var (badLine, offset) = FirstInvalidUtf8(file);
                throw new TianGongException($"'{file}' is not UTF-8 text (line {badLine}, byte {offset}); convert it to UTF-8 first.");
            }
            if (line is null) yield break;
            lineNumber++;
            yield return lineNumber == 1 ? line.TrimStart('\uFEFF') : line;
        }
    }

    /// <summary>Line (1-based) and byte offset of the first byte that is not UTF-8 (the reader decodes whole blocks, so it cannot say).</summary>
    private static (long Line, long Offset) FirstInvalidUtf8(string file)
    {
        using var stream = File.OpenRead(file);
        var buffer = new byte[1 << 16];
        var chars = new char[1 << 16];
        int carried = 0;
        long consumed = 0, line = 1;
        while (true)
        {
            int read = stream.Read(buffer, carried, buffer.Length - carried);
            int available = carried + read;
            var status = System.Text.Unicode.Utf8.ToUtf16(buffer.AsSpan(0, available), chars, out int bytesRead, out _,
                replaceInvalidSequences: false, isFinalBlock: read == 0);
            line += buffer.AsSpan(0, bytesRead).Count((byte)'\n');
            consumed += bytesRead;
            if (status == System.Buffers.OperationStatus.InvalidData || (read == 0 && bytesRead < available)) return (line, consumed);
            if (read == 0) return (line, consumed);
            carried = available - bytesRead;
            buffer.AsSpan(bytesRead, carried).CopyTo(buffer);
        }
    }

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    private static List<string> ListFiles(string path)
    {
        switch (RegularFile.KindOf(path))
        {
            case "file":
                RequireNonEmpty(path);
                return [path];
            case "directory":
                break;
            case null:
                throw new TianGongException($"Corpus path '{path}' is neither a file nor a directory.");
            case var kind:
                throw new TianGongException($"Corpus path '{path}' is a {kind}, not a regular file or directory.");
        }
        var found = Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories)
            .Where(f => f.EndsWith(".txt", StringComparison.OrdinalIgnoreCase) || IsJsonLines(f))
            .Where(f => RegularFile.KindOf(f) == "file") // a pipe named x.txt would block the reader forever
            .Order(StringComparer.Ordinal)
            .ToList();
        if (found.Count == 0) throw new TianGongException($"No .txt, .jsonl or .ndjson files under '{path}'.");
        if (found.All(f => new FileInfo(f).Length == 0)) throw new TianGongException($"Every corpus file under '{path}' is empty (0 bytes).");
        return found;
    }

    private static void RequireNonEmpty(string file)
    {
        if (new FileInfo(file).Length == 0) throw new TianGongException($"Corpus file '{file}' is empty (0 bytes).");
    }
}
