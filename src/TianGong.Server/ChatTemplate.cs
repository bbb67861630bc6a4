using TianGong.Tokenizers;

namespace TianGong.Server;

/// <summary>
/// The default chat template (ChatML) for model folders that bring none: per message
/// <c>&lt;|im_start|&gt;{role}\n{content}&lt;|im_end|&gt;\n</c>, then <c>&lt;|im_start|&gt;assistant\n</c>; the reply ends at
/// <c>&lt;|im_end|&gt;</c> or end-of-text. The markers are inserted as token ids, never parsed out of message text,
/// so a user cannot forge a turn by typing them.
/// </summary>
internal static class ChatTemplate
{
    public const string Start = "<|im_start|>", End = "<|im_end|>";

    public static int[] Encode(ITextTokenizer tokenizer, IReadOnlyList<(string Role, string Content)> messages)
    {
        var ids = new List<int>();
        foreach (var (role, content) in messages)
        {
            ids.AddRange(Marker(tokenizer, Start));
            ids.AddRange(tokenizer.Encode($"{role}\n{content}"));
            ids.AddRange(Marker(tokenizer, End));
            ids.AddRange(tokenizer.Encode("\n"));
        }
        ids.AddRange(Marker(tokenizer, Start));
        ids.AddRange(tokenizer.Encode("assistant\n"));
        return [.. ids];
    }

    /// <summary>Token ids that end a reply besides end-of-text.</summary>
    public static int[] StopIds(ITextTokenizer tokenizer) => tokenizer.TokenToId(End) is { } id ? [id] : [];

    // A tokenizer without the marker tokens still gets the template, spelled as text.
    private static int[] Marker(ITextTokenizer tokenizer, string marker) =>
        tokenizer.TokenToId(marker) is { } id ? [id] : tokenizer.Encode(marker);
}
