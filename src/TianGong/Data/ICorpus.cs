namespace TianGong.Data;

/// <summary>
/// A stream of documents. Enumerating reads the files again from the start, one file at a time,
/// so a corpus never sits in memory whole and two enumerations yield the same documents in the same order.
/// </summary>
public interface ICorpus : IEnumerable<string>
{
    /// <summary>Where the documents come from, recorded in the token index (e.g. "chinese-poetry:tang,song;form=any").</summary>
    string Source { get; }
}
