using TianGong.Tokenizers;

namespace TianGong.Server;

/// <summary>
/// Chat requests become prompts through the model folder's own chat template (tokenizer_config.json), or
/// <see cref="ChatTemplate.Default"/> (ChatML: <c>&lt;|im_start|&gt;{role}\n{content}&lt;|im_end|&gt;\n</c> per message,
/// then <c>&lt;|im_start|&gt;assistant\n</c>) for folders without one, such as our own pretrained models.
/// As in transformers' apply_chat_template followed by tokenization, special-token strings become their ids.
/// </summary>
internal static class ChatPrompt
{
    public static int[] Encode(ITextTokenizer tokenizer, IReadOnlyList<(string Role, string Content)> messages)
    {
        var template = tokenizer.ChatTemplate ?? ChatTemplate.Default;
        return tokenizer.Encode(template.Render(messages.Select(m => new ChatMessage(m.Role, m.Content)).ToList(), addGenerationPrompt: true));
    }

    /// <summary>Token ids that end an assistant turn besides end-of-text: the format's end-of-turn marker.</summary>
    public static int[] StopIds(ITextTokenizer tokenizer)
    {
        var marker = (tokenizer.ChatTemplate ?? ChatTemplate.Default).Format switch
        {
            ChatTemplateFormat.ChatML => "<|im_end|>",
            ChatTemplateFormat.Llama3 => "<|eot_id|>",
            _ => null, // Llama 2 ends a turn with eos, which always stops
        };
        return marker is not null && tokenizer.TokenToId(marker) is { } id ? [id] : [];
    }
}
