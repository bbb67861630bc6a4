using System.Text.Json;
using System.Text.Json.Nodes;
using TianGong.Tokenizers;

namespace TianGong.Tuning.Data;

/// <summary>One conversation of a chat JSONL file and the line it came from (for errors).</summary>
public sealed record ChatRow(int Line, IReadOnlyList<ChatMessage> Messages);

/// <summary>
/// Reads instruction-tuning data: JSON Lines, one <c>{"messages":[{"role":...,"content":...}, ...]}</c> per line, as
/// TRL's SFTTrainer and the OpenAI fine-tuning API take it. Every row is checked before training starts; a bad one is
/// an error naming the file, the line and the field.
/// </summary>
public static class ChatRows
{
    private static readonly HashSet<string> Roles = ["system", "user", "assistant", "tool"];

    public static IReadOnlyList<ChatRow> Read(string path)
    {
        if (!File.Exists(path)) throw new TianGongException($"{path}: chat data file not found");
        var rows = new List<ChatRow>();
        int line = 0;
        foreach (var text in File.ReadLines(path))
        {
            line++;
            if (string.IsNullOrWhiteSpace(text)) continue;
            rows.Add(new ChatRow(line, Parse(text, $"{path}:{line}")));
        }
        if (rows.Count == 0) throw new TianGongException($"{path}: no conversations (expected one JSON object per line with a 'messages' list)");
        return rows;
    }

    private static IReadOnlyList<ChatMessage> Parse(string text, string where)
    {
        JsonNode? node;
        try { node = JsonNode.Parse(text); }
        catch (JsonException e) { throw new TianGongException($"{where}: not valid JSON ({e.Message})"); }
        if (node is not JsonObject row) throw new TianGongException($"{where}: expected a JSON object with a 'messages' list");
        if (row["messages"] is not JsonArray list) throw new TianGongException($"{where}: field 'messages': missing or not a list");
        var messages = new List<ChatMessage>();
        for (int i = 0; i < list.Count; i++)
        {
            if (list[i] is not JsonObject m) throw new TianGongException($"{where}: field 'messages[{i}]': expected an object with 'role' and 'content'");
            var role = Text(m, "role", $"{where}: field 'messages[{i}].role'");
            if (!Roles.Contains(role)) throw new TianGongException($"{where}: field 'messages[{i}].role': '{role}' is not one of system, user, assistant, tool");
            messages.Add(new ChatMessage(role, Text(m, "content", $"{where}: field 'messages[{i}].content'")));
        }
        if (!messages.Any(m => m.Role == "assistant"))
            throw new TianGongException($"{where}: field 'messages': no assistant message, so nothing to learn from this row");
        return messages;
    }

    private static string Text(JsonObject m, string key, string where) =>
        m[key] is JsonValue v && v.TryGetValue<string>(out var s) ? s
            : throw new TianGongException($"{where}: {(m.ContainsKey(key) ? "expected a string" : "missing")}");
}

/// <summary>Token ids of a rendered conversation and, per token, whether the loss sees it (assistant tokens only).</summary>
public sealed record ChatTokens(int[] Ids, bool[] Trained)
{
    /// <summary>
    /// Renders <paramref name="messages"/> with <paramref name="template"/> turn by turn: the text a turn adds to the
    /// rendering of the turns before it is that turn's; for an assistant turn, the generation prompt
    /// (<c>&lt;|im_start|&gt;assistant\n</c>) is not trained and the reply with its end-of-turn marker is, so the model
    /// learns to answer and to stop. Templates that rewrite earlier turns (not prefix-stable) are refused.
    /// </summary>
    public static ChatTokens Build(IReadOnlyList<ChatMessage> messages, ChatTemplate template, ITextTokenizer tokenizer)
    {
        var ids = new List<int>();
        var trained = new List<bool>();
        string done = "";
        void Add(string text, bool train)
        {
            if (text.Length == 0) return;
            var piece = tokenizer.Encode(text);
            ids.AddRange(piece);
            trained.AddRange(Enumerable.Repeat(train, piece.Length));
        }
        string Extend(string before, string after, int turn)
        {
            if (!after.StartsWith(before, StringComparison.Ordinal))
                throw new TianGongException($"{template.Where}: rendering turn {turn} changes the text of the turns before it, so assistant tokens cannot be told apart");
            return after[before.Length..];
        }
        for (int i = 0; i < messages.Count; i++)
        {
            var upTo = messages.Take(i + 1).ToList();
            var full = template.Render(upTo, addGenerationPrompt: false);
            if (messages[i].Role == "assistant")
            {
                var prompt = template.Render(messages.Take(i).ToList(), addGenerationPrompt: true);
                Add(Extend(done, prompt, i), false);
                Add(Extend(prompt, full, i), true);
            }
            else
            {
                Add(Extend(done, full, i), false);
            }
            done = full;
        }
        return new ChatTokens(ids.ToArray(), trained.ToArray());
    }
}
