using TianGong.Tokenizers;

namespace TianGong.Server;

/// <summary>
/// Chat requests become prompts through the model folder's own chat template (tokenizer_config.json or
/// chat_template.jinja, rendered by our Jinja interpreter), or <see cref="ChatTemplate.Default"/> (ChatML:
/// <c>&lt;|im_start|&gt;{role}\n{content}&lt;|im_end|&gt;\n</c> per message, then <c>&lt;|im_start|&gt;assistant\n</c>)
/// for folders without one, such as our own pretrained models. As in transformers' apply_chat_template followed by
/// tokenization with add_special_tokens=False, special-token strings become their ids and nothing else is added.
/// </summary>
internal static class ChatPrompt
{
    public static int[] Encode(ITextTokenizer tokenizer, IReadOnlyList<(string Role, string Content)> messages)
    {
        var template = tokenizer.ChatTemplate ?? ChatTemplate.Default;
        return tokenizer.Encode(template.Render(messages.Select(m => new ChatMessage(m.Role, m.Content)).ToList(), addGenerationPrompt: true));
    }

    /// <summary>Token ids that end an assistant turn besides end-of-text: the end-of-turn markers the template writes.</summary>
    public static int[] StopIds(ITextTokenizer tokenizer) =>
        [.. (tokenizer.ChatTemplate ?? ChatTemplate.Default).EndOfTurnMarkers().Select(tokenizer.TokenToId).OfType<int>()];
}
