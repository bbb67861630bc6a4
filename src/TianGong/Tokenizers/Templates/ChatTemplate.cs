using System.Text.Json.Nodes;

namespace TianGong.Tokenizers;

/// <summary>One turn of a conversation: <c>Role</c> is "system", "user", "assistant" or "tool".</summary>
public sealed record ChatMessage(string Role, string Content);

/// <summary>
/// A chat template: the Jinja source of tokenizer_config.json's <c>chat_template</c> (or chat_template.jinja), rendered
/// as transformers' <c>apply_chat_template</c> renders it (see <see cref="Templates.JinjaTemplate"/>). The source is
/// parsed on first use, so a folder with a template we cannot render still loads, encodes and scores; only chat fails.
/// </summary>
public sealed class ChatTemplate
{
    private readonly Lazy<Templates.JinjaTemplate> parsed;
    private readonly string? bosToken, eosToken;

    private ChatTemplate(string source, string? bosToken, string? eosToken, string where)
    {
        (Source, this.bosToken, this.eosToken, Where) = (source, bosToken, eosToken, where);
        parsed = new Lazy<Templates.JinjaTemplate>(() => Templates.JinjaTemplate.Parse(source, where));
    }

    /// <summary>The Jinja source.</summary>
    public string Source { get; }

    /// <summary>Where the template came from, for errors.</summary>
    public string Where { get; }

    /// <summary>
    /// For folders without a template (our own pretrained models): plain ChatML with no default system prompt,
    /// as in the HF docs' ChatML example. It needs no special tokens; unknown markers are encoded as text.
    /// </summary>
    public static ChatTemplate Default { get; } = new(
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
        + "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}", null, null, "the default ChatML template");

    /// <summary>A Jinja template; <paramref name="bosToken"/>/<paramref name="eosToken"/> are the variables transformers passes.</summary>
    public static ChatTemplate FromJinja(string source, string? bosToken, string? eosToken, string where) => new(source, bosToken, eosToken, where);

    /// <summary>The prompt for plain text messages.</summary>
    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt = true) =>
        Render(new JsonArray([.. messages.Select(m => (JsonNode)new JsonObject { ["role"] = m.Role, ["content"] = m.Content })]), null, addGenerationPrompt);

    /// <summary>
    /// The prompt for messages in the OpenAI/transformers shape (assistant <c>tool_calls</c>, <c>tool</c> messages) and
    /// optional tool definitions, with the variables transformers passes (bos_token, eos_token, add_generation_prompt, tools).
    /// An error naming <see cref="Where"/> when the template cannot be parsed or raises.
    /// </summary>
    public string Render(JsonArray messages, JsonArray? tools, bool addGenerationPrompt, IReadOnlyDictionary<string, JsonNode?>? extra = null)
    {
        var variables = new Dictionary<string, object?>
        {
            ["messages"] = Templates.JinjaValue.FromJson(messages),
            ["add_generation_prompt"] = addGenerationPrompt,
            ["bos_token"] = bosToken ?? "",
            ["eos_token"] = eosToken ?? "",
        };
        if (tools is not null) variables["tools"] = Templates.JinjaValue.FromJson(tools);
        foreach (var (name, value) in extra ?? new Dictionary<string, JsonNode?>()) variables[name] = Templates.JinjaValue.FromJson(value);
        return parsed.Value.Render(variables);
    }

    /// <summary>End-of-turn markers the template writes (ChatML's &lt;|im_end|&gt;, Llama 3's &lt;|eot_id|&gt;, Gemma's &lt;end_of_turn&gt;...).</summary>
    public IEnumerable<string> EndOfTurnMarkers() =>
        new[] { "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<|end|>", "<|end▁of▁sentence|>", "<｜end▁of▁sentence｜>", "[/INST]" }
            .Where(m => m != "[/INST]" && Source.Contains(m, StringComparison.Ordinal));
}
