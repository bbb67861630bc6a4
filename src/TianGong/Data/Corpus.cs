using TianGong.Poetry;

namespace TianGong.Data;

/// <summary>Options for <see cref="Corpus.Open"/>; only the part that matches the corpus kind is used.</summary>
/// <param name="Home">TianGong home that holds <c>datasets/</c>; null reads <c>$TIANGONG_HOME</c>.</param>
/// <param name="Status">Told when a dataset has to be fetched first.</param>
public sealed record CorpusOptions(
    PoetryCorpusOptions? Poetry = null,
    TextCorpusOptions? Text = null,
    string? Home = null,
    Action<string>? Status = null);

public static class Corpus
{
    /// <summary>
    /// Opens <c>chinese-poetry</c> (the downloaded dataset under the TianGong home) or a text/JSONL file or
    /// directory. A missing poetry dataset throws <see cref="TianGongException"/> saying how to fetch it.
    /// </summary>
    public static ICorpus Open(string corpus, CorpusOptions? options = null)
    {
        options ??= new CorpusOptions();
        if (string.Equals(corpus, PoetryCorpus.Name, StringComparison.OrdinalIgnoreCase))
            return new PoetryCorpus(DatasetFetcher.Ensure(PoetryCorpus.Name, options.Home, options.Status), options.Poetry);
        return new TextCorpus(corpus, options.Text);
    }
}
