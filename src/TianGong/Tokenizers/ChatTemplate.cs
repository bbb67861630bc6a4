using System.Text;
using System.Text.RegularExpressions;

namespace TianGong.Tokenizers;

/// <summary>One turn of a conversation: <c>Role</c> is "system", "user" or "assistant".</summary>
public sealed record ChatMessage(string Role, string Content);

/// <summary>The chat formats we render without a Jinja engine, recognised by their markers.</summary>
public enum ChatTemplateFormat
{
    /// <summary><c>&lt;|im_start|&gt;role\ncontent&lt;|im_end|&gt;\n</c> (Qwen2, Qwen2.5, many fine-tunes).</summary>
    ChatML,

    /// <summary><c>&lt;|start_header_id|&gt;role&lt;|end_header_id|&gt;\n\ncontent&lt;|eot_id|&gt;</c> (Llama 3.0).</summary>
    Llama3,

    /// <summary><c>&lt;s&gt;[INST] &lt;&lt;SYS&gt;&gt;…[/INST] answer &lt;/s&gt;</c> (Llama 2 chat).</summary>
    Llama2,
}

/// <summary>
/// A tokenizer_config.json <c>chat_template</c>, rendered in C#: the Jinja source only picks the format
/// (and ChatML's literal default system prompt); rendering reproduces what the template produces for plain
/// text messages (no tools, no images).
/// </summary>
public sealed partial record ChatTemplate(ChatTemplateFormat Format, string BosToken = "", string EosToken = "", string? DefaultSystemPrompt = null)
{
    /// <summary>
    /// For folders without a template (our own pretrained models): plain ChatML with no default system prompt,
    /// as in the HF docs' ChatML example. It needs no special tokens; unknown markers are encoded as text.
    /// </summary>
    public static ChatTemplate Default { get; } = new(ChatTemplateFormat.ChatML);

    /// <summary>Recognises a Jinja chat template by its markers; an error naming <paramref name="source"/> when it is none we render.</summary>
    public static ChatTemplate Parse(string template, string? bosToken, string? eosToken, string source)
    {
        (bosToken, eosToken) = (bosToken ?? "", eosToken ?? "");
        if (template.Contains("<|im_start|>", StringComparison.Ordinal))
        {
            // Qwen3's template rewrites assistant turns around <think>; rendering it as plain ChatML would be wrong.
            if (template.Contains("<think>", StringComparison.Ordinal))
                throw Unsupported(source, "a ChatML template with <think> reasoning blocks (Qwen3 style)");
            return new ChatTemplate(ChatTemplateFormat.ChatML, bosToken, eosToken, LiteralDefaultSystemPrompt(template));
        }
        if (template.Contains("<|start_header_id|>", StringComparison.Ordinal))
        {
            // Llama 3.1+ always writes a dated system header (and tool instructions); only 3.0's plain turns are rendered.
            if (template.Contains("Cutting Knowledge Date", StringComparison.Ordinal))
                throw Unsupported(source, "a Llama 3.1+ template (dated system header, tools)");
            return new ChatTemplate(ChatTemplateFormat.Llama3, bosToken, eosToken);
        }
        if (template.Contains("[INST]", StringComparison.Ordinal) && template.Contains("<<SYS>>", StringComparison.Ordinal))
            return new ChatTemplate(ChatTemplateFormat.Llama2, bosToken, eosToken);
        throw Unsupported(source, "a template that is not ChatML (<|im_start|>), Llama 3 (<|start_header_id|>) or Llama 2 ([INST] with <<SYS>>)");
    }

    private static TianGongException Unsupported(string source, string what) =>
        new($"{source}: `chat_template` is {what}; TianGong renders templates without Jinja and does not recognise this one");

    /// <summary>The prompt the template renders for <paramref name="messages"/>.</summary>
    /// <param name="addGenerationPrompt">Append the header of the assistant's reply (Llama 2's template has none and ignores it).</param>
    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt = true) => Format switch
    {
        ChatTemplateFormat.ChatML => RenderChatML(messages, addGenerationPrompt),
        ChatTemplateFormat.Llama3 => RenderLlama3(messages, addGenerationPrompt),
        ChatTemplateFormat.Llama2 => RenderLlama2(messages),
        _ => throw new ArgumentOutOfRangeException(nameof(Format), Format, null),
    };

    private string RenderChatML(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt)
    {
        var text = new StringBuilder();
        // Qwen's templates write their default system turn when the conversation does not start with one.
        if (DefaultSystemPrompt is not null && messages.Count > 0 && messages[0].Role != "system")
            text.Append("<|im_start|>system\n").Append(DefaultSystemPrompt).Append("<|im_end|>\n");
        foreach (var m in messages)
            text.Append("<|im_start|>").Append(m.Role).Append('\n').Append(m.Content).Append("<|im_end|>\n");
        if (addGenerationPrompt) text.Append("<|im_start|>assistant\n");
        return text.ToString();
    }

    private string RenderLlama3(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt)
    {
        var text = new StringBuilder(BosToken);
        foreach (var m in messages)
            text.Append("<|start_header_id|>").Append(m.Role).Append("<|end_header_id|>\n\n").Append(PyStrip(m.Content)).Append("<|eot_id|>");
        if (addGenerationPrompt) text.Append("<|start_header_id|>assistant<|end_header_id|>\n\n");
        return text.ToString();
    }

    // As Llama 2's template: the system prompt goes inside the first [INST], each user turn starts with bos,
    // each answer ends with eos, and roles must alternate user/assistant.
    private string RenderLlama2(IReadOnlyList<ChatMessage> messages)
    {
        string? system = messages.Count > 0 && messages[0].Role == "system" ? messages[0].Content : null;
        var turns = messages.Skip(system is null ? 0 : 1).ToList();
        var text = new StringBuilder();
        for (int i = 0; i < turns.Count; i++)
        {
            if ((turns[i].Role == "user") != (i % 2 == 0))
                throw new TianGongException("Llama 2 chat template: conversation roles must alternate user/assistant/user/assistant/...");
            string content = i == 0 && system is not null ? $"<<SYS>>\n{system}\n<</SYS>>\n\n{turns[i].Content}" : turns[i].Content;
            if (turns[i].Role == "user") text.Append(BosToken).Append("[INST] ").Append(PyStrip(content)).Append(" [/INST]");
            else if (turns[i].Role == "assistant") text.Append(' ').Append(PyStrip(content)).Append(' ').Append(EosToken);
        }
        return text.ToString();
    }

    /// <summary>Python's str.strip() (Jinja's trim): .NET whitespace plus the separators U+001C..U+001F.</summary>
    private static string PyStrip(string s)
    {
        static bool IsSpace(char c) => char.IsWhiteSpace(c) || c is >= '\x1c' and <= '\x1f';
        int start = 0, end = s.Length;
        while (start < end && IsSpace(s[start])) start++;
        while (end > start && IsSpace(s[end - 1])) end--;
        return s[start..end];
    }

    /// <summary>A system turn written as one string literal in the template (Qwen's default), unescaped; null when there is none.</summary>
    private static string? LiteralDefaultSystemPrompt(string template)
    {
        var match = DefaultSystemRegex().Match(template);
        return match.Success ? UnescapeJinja(match.Groups[1].Value) : null;
    }

    [GeneratedRegex(@"<\|im_start\|>system\\n([^'""{}+]*?)<\|im_end\|>")]
    private static partial Regex DefaultSystemRegex();

    private static string UnescapeJinja(string s)
    {
        var text = new StringBuilder(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] != '\\' || i + 1 == s.Length) { text.Append(s[i]); continue; }
            char c = s[++i];
            text.Append(c switch { 'n' => '\n', 't' => '\t', 'r' => '\r', _ => c });
        }
        return text.ToString();
    }
}
