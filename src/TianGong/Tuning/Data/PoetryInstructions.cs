using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using TianGong.Data;
using TianGong.Poetry;
using TianGong.Tokenizers;

namespace TianGong.Tuning.Data;

/// <summary>The four kinds of request the poetry instruction set teaches.</summary>
public enum PoetryInstructionKind { Title, Continue, Acrostic, Author }

/// <summary>
/// A poetry instruction set made from chinese-poetry, so the demo model can become a chat model with
/// <c>finetune --task sft --data poetry-instructions</c>: each conversation is one user request and the poem (or the
/// answer) as the assistant's reply —
/// write a poem with this title; continue these lines; an acrostic whose lines begin with these characters; name the
/// author of this poem. The poems are a seeded uniform sample of the corpus (the <c>count</c> poems with the smallest
/// hash of (seed, index), so the sample does not depend on the reading order), and each poem gets one kind, also by
/// hash, among the kinds it can serve (an acrostic needs 4 or 8 verse lines, continuing needs two lines or more, the
/// author question needs an author); poems longer than <c>maxChars</c> are left out. Prompts are in traditional characters, as most of the corpus (Tang and Song shi) is, so a tokenizer trained on it
/// reads them as whole characters; poems keep their published characters.
/// </summary>
public static class PoetryInstructions
{
    public const string Name = "poetry-instructions";
    public const int DefaultCount = 20_000;
    public const ulong DefaultSeed = 1234;

    /// <summary>
    /// Poems with more characters than this (title and lines, punctuation included) are left out by default: a regulated
    /// eight-line poem of seven-character lines has 64 in its lines, so with a short title a whole conversation (an
    /// author question repeats the poem) stays within the 128-token windows small models fine-tune on; longer poems
    /// would be cut before the answer and teach nothing.
    /// </summary>
    public const int DefaultMaxChars = 80;

    private static readonly char[] VerseEnds = ['，', '。', '？', '！', '；'];

    /// <summary>The conversations for a sample of <paramref name="poems"/>, in corpus order.</summary>
    /// <param name="maxChars">Poems whose title and lines have more characters than this (punctuation included) are left out.</param>
    public static IReadOnlyList<IReadOnlyList<ChatMessage>> Build(IEnumerable<Poem> poems, int count, ulong seed, int maxChars = DefaultMaxChars)
    {
        if (count < 1) throw new TianGongException($"--count: expected at least 1 conversation, got {count}");
        if (maxChars < 1) throw new TianGongException($"--max-chars: expected at least 1 character, got {maxChars}");
        // Bottom-k sample: a max-heap on the hash keeps the count smallest.
        var kept = new PriorityQueue<(long Index, Poem Poem), ulong>(Comparer<ulong>.Create((a, b) => b.CompareTo(a)));
        long index = 0;
        foreach (var poem in poems.Where(p => p.Title.Length + p.Lines.Sum(l => l.Length) <= maxChars))
        {
            ulong key = SplitMix64.Hash(seed, (ulong)index);
            if (kept.Count < count) kept.Enqueue((index, poem), key);
            else if (kept.TryPeek(out _, out var largest) && key < largest) kept.EnqueueDequeue((index, poem), key);
            index++;
        }
        if (kept.Count == 0) throw new TianGongException("poetry instructions: the corpus gave no poems");
        return kept.UnorderedItems.Select(e => e.Element).OrderBy(e => e.Index)
            .Select(e => Conversation(e.Poem, KindFor(e.Poem, SplitMix64.Hash(seed, (ulong)e.Index, 1)))).ToList();
    }

    /// <summary>The kinds a poem can serve, in enum order.</summary>
    public static IReadOnlyList<PoetryInstructionKind> KindsFor(Poem poem)
    {
        var kinds = new List<PoetryInstructionKind> { PoetryInstructionKind.Title };
        if (poem.Lines.Count >= 2) kinds.Add(PoetryInstructionKind.Continue);
        if (VerseLines(poem) is { Count: 4 or 8 }) kinds.Add(PoetryInstructionKind.Acrostic);
        if (poem.Author is not null) kinds.Add(PoetryInstructionKind.Author);
        return kinds;
    }

    private static PoetryInstructionKind KindFor(Poem poem, ulong hash)
    {
        var kinds = KindsFor(poem);
        return kinds[(int)SplitMix64.ToRange(hash, (ulong)kinds.Count)];
    }

    /// <summary>One request and its answer.</summary>
    public static IReadOnlyList<ChatMessage> Conversation(Poem poem, PoetryInstructionKind kind)
    {
        string body = string.Join('\n', poem.Lines);
        (string user, string assistant) = kind switch
        {
            PoetryInstructionKind.Title => ($"寫一首《{poem.Title}》。", body),
            PoetryInstructionKind.Continue => ContinueLines(poem),
            PoetryInstructionKind.Acrostic => ($"寫一首藏頭詩，每句的第一個字依次是「{string.Concat(VerseLines(poem).Select(l => l[0]))}」。", body),
            PoetryInstructionKind.Author => ($"下面這首詩的作者是誰？\n《{poem.Title}》\n{body}",
                poem.Author ?? throw new TianGongException($"《{poem.Title}》: no author, so it cannot make an author question")),
            _ => throw new ArgumentOutOfRangeException(nameof(kind)),
        };
        return [new ChatMessage("user", user), new ChatMessage("assistant", assistant)];
    }

    private static (string User, string Assistant) ContinueLines(Poem poem)
    {
        if (poem.Lines.Count < 2) throw new TianGongException($"《{poem.Title}》: one line, nothing to continue");
        int given = (poem.Lines.Count + 1) / 2;
        return ($"續寫這首詩：\n{string.Join('\n', poem.Lines.Take(given))}", string.Join('\n', poem.Lines.Skip(given)));
    }

    /// <summary>The verse lines (half-couplets) of a poem: its lines cut after ，。？！；.</summary>
    public static IReadOnlyList<string> VerseLines(Poem poem) =>
        poem.Lines.SelectMany(line => SplitAfter(line)).Where(v => v.Length > 1).ToList();

    private static IEnumerable<string> SplitAfter(string line)
    {
        int start = 0;
        for (int i = line.IndexOfAny(VerseEnds); i >= 0; i = line.IndexOfAny(VerseEnds, start))
        {
            yield return line[start..(i + 1)];
            start = i + 1;
        }
        if (start < line.Length) yield return line[start..];
    }

    /// <summary>Writes the conversations as chat JSONL (<c>{"messages":[...]}</c> per line), atomically.</summary>
    public static void Write(string path, IEnumerable<IReadOnlyList<ChatMessage>> conversations)
    {
        var options = new JsonSerializerOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        var lines = conversations.Select(c => new JsonObject
        {
            ["messages"] = new JsonArray([.. c.Select(m => (JsonNode)new JsonObject { ["role"] = m.Role, ["content"] = m.Content })]),
        }.ToJsonString(options));
        ConfigJson.WriteAtomically(path, string.Join("\n", lines) + "\n");
    }

    /// <summary>
    /// The default instruction set (<see cref="DefaultCount"/> conversations, seed <see cref="DefaultSeed"/>, Tang and
    /// Song shi and Song ci), built once into <c>$TIANGONG_HOME/cache/tasks/poetry-instructions/train.jsonl</c>.
    /// </summary>
    public static string Ensure(string home, Action<string>? status = null)
    {
        var path = Path.Combine(home, "cache", "tasks", Name, "train.jsonl");
        if (File.Exists(path)) return path;
        var corpus = new PoetryCorpus(DatasetFetcher.Ensure(PoetryCorpus.Name, home, status));
        var conversations = Build(corpus.Poems(), DefaultCount, DefaultSeed);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        Write(path, conversations);
        status?.Invoke($"{Name}: {conversations.Count} conversations in {path}");
        return path;
    }
}
