namespace TianGong.Poetry;

/// <summary>Which parts of <c>chinese-poetry</c> to read. Parses from "tang,song" with <c>Enum.Parse(..., ignoreCase: true)</c>.</summary>
[Flags]
public enum PoetryCollections
{
    None = 0,
    /// <summary>全唐诗: <c>dist/quantangshi/poet.tang.*.json</c> (traditional characters).</summary>
    Tang = 1,
    /// <summary>全宋诗: <c>dist/quantangshi/poet.song.*.json</c>.</summary>
    Song = 2,
    /// <summary>全宋词: <c>dist/songci/ci.song.*.json</c>; the tune name (<c>rhythmic</c>) stands in for the title.</summary>
    Ci = 4,
    All = Tang | Song | Ci,
}

/// <summary>Filter for regulated verse. Half-lines are the clauses between punctuation marks.</summary>
public enum PoetryForm
{
    /// <summary>Every clean poem.</summary>
    Any,
    /// <summary>绝句: 4 half-lines, all of 5 or all of 7 characters.</summary>
    Jueju,
    /// <summary>律诗: 8 half-lines, all of 5 or all of 7 characters.</summary>
    Lushi,
}

public sealed record PoetryCorpusOptions(
    PoetryCollections Collections = PoetryCollections.All,
    PoetryForm Form = PoetryForm.Any)
{
    /// <summary>The collections named in <paramref name="names"/> (tang, song, ci); none named: all of them.</summary>
    public static PoetryCollections ParseCollections(IEnumerable<string>? names, string option = "--collections")
    {
        var result = PoetryCollections.None;
        foreach (var name in names ?? [])
            result |= Enum.TryParse<PoetryCollections>(name.Trim(), ignoreCase: true, out var c) && c is PoetryCollections.Tang or PoetryCollections.Song or PoetryCollections.Ci ? c
                : throw new TianGongException($"{option}: '{name}' is not a collection of chinese-poetry (tang, song, ci)");
        return result == PoetryCollections.None ? PoetryCollections.All : result;
    }
}
