using System.Text.Json.Nodes;
using TianGong.Tokenizers;

namespace TianGong.Tests.Tokenizers;

/// <summary>Rendered prompts against what the real Jinja templates produce, written out by hand.</summary>
public sealed class ChatTemplateTests
{
    // As in Qwen2-7B-Instruct's tokenizer_config.json (JSON-decoded, so "\n" is backslash-n inside Jinja string literals).
    public const string Qwen2Template = @"{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    private const string PlainChatMLTemplate = @"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    // As in Meta-Llama-3-8B-Instruct.
    private const string Llama3Template = @"{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

    // As in Llama-2-7b-chat-hf.
    private const string Llama2Template = @"{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

    private static readonly ChatMessage[] Conversation =
    [
        new("system", "Be brief. "),
        new("user", " Hi!\n"),
        new("assistant", "Hello."),
        new("user", "Bye"),
    ];

    [Fact]
    public void QwenChatMLWritesItsDefaultSystemTurnOnlyWhenTheConversationHasNone()
    {
        var template = ChatTemplate.Parse(Qwen2Template, null, "<|im_end|>", "tokenizer_config.json");

        Assert.Equal("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
            template.Render([new ChatMessage("user", "Hi")]));
        Assert.Equal("<|im_start|>system\nBe brief. <|im_end|>\n<|im_start|>user\n Hi!\n<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n"
            + "<|im_start|>user\nBye<|im_end|>\n",
            template.Render(Conversation, addGenerationPrompt: false));
    }

    [Fact]
    public void PlainChatMLAndTheDefaultHaveNoSystemTurn()
    {
        var template = ChatTemplate.Parse(PlainChatMLTemplate, null, null, "tokenizer_config.json");
        const string expected = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";
        Assert.Equal(expected, template.Render([new ChatMessage("user", "Hi")]));
        Assert.Equal(expected, ChatTemplate.Default.Render([new ChatMessage("user", "Hi")]));
    }

    [Fact]
    public void Llama3StartsWithBosAndTrimsEachMessage()
    {
        var template = ChatTemplate.Parse(Llama3Template, "<|begin_of_text|>", "<|eot_id|>", "tokenizer_config.json");

        Assert.Equal(ChatTemplateFormat.Llama3, template.Format);
        Assert.Equal("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            + "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
            + "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
            + "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
            + "<|start_header_id|>assistant<|end_header_id|>\n\n",
            template.Render(Conversation));
    }

    [Fact]
    public void Llama2FoldsTheSystemPromptIntoTheFirstUserTurn()
    {
        var template = ChatTemplate.Parse(Llama2Template, "<s>", "</s>", "tokenizer_config.json");

        // Llama 2's template has no generation prompt: the reply follows " [/INST]".
        Assert.Equal("<s>[INST] <<SYS>>\nBe brief. \n<</SYS>>\n\n Hi! [/INST] Hello. </s><s>[INST] Bye [/INST]",
            template.Render(Conversation));
        Assert.Equal("<s>[INST] Hi [/INST]", template.Render([new ChatMessage("user", " Hi ")]));
        Assert.Throws<TianGongException>(() => template.Render([new ChatMessage("user", "a"), new ChatMessage("user", "b")]));
    }

    [Fact]
    public void UnrecognisedTemplatesAreErrorsNamingTheFile()
    {
        var error = Assert.Throws<TianGongException>(() =>
            ChatTemplate.Parse("{% for m in messages %}{{ m.content }}{% endfor %}", null, null, "/models/x/tokenizer_config.json"));
        Assert.Contains("/models/x/tokenizer_config.json", error.Message);
        Assert.Throws<TianGongException>(() => ChatTemplate.Parse(
            "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}{{- 'Cutting Knowledge Date: December 2023\\n' }}", null, null, "f"));
    }

    [Fact]
    public void LoaderReadsTheDefaultEntryOfATemplateListAndReportsUnknownOnes()
    {
        var folder = TestModels.TempDir();
        try
        {
            var vocab = new JsonObject();
            for (int b = 0; b < 256; b++) vocab[ByteLevelAlphabet.ToChar((byte)b).ToString()] = b;
            var json = new JsonObject
            {
                ["added_tokens"] = new JsonArray(new JsonObject { ["id"] = 256, ["content"] = "<|im_end|>", ["special"] = true }),
                ["model"] = new JsonObject { ["type"] = "BPE", ["vocab"] = vocab, ["merges"] = new JsonArray() },
            };
            File.WriteAllText(Path.Combine(folder, TokenizerLoader.TokenizerJsonFile), json.ToJsonString());
            var configPath = Path.Combine(folder, TokenizerLoader.TokenizerConfigFile);
            File.WriteAllText(configPath, new JsonObject
            {
                ["eos_token"] = "<|im_end|>",
                ["chat_template"] = new JsonArray(
                    new JsonObject { ["name"] = "tool_use", ["template"] = "{{ tools }}" },
                    new JsonObject { ["name"] = "default", ["template"] = Qwen2Template }),
            }.ToJsonString());
            var template = TokenizerLoader.Load(folder)!.ChatTemplate!;
            Assert.Equal(("You are a helpful assistant.", "<|im_end|>"), (template.DefaultSystemPrompt, template.EosToken));

            File.WriteAllText(configPath, new JsonObject { ["chat_template"] = "{{ messages | tojson }}" }.ToJsonString());
            var error = Assert.Throws<TianGongException>(() => TokenizerLoader.Load(folder));
            Assert.Contains(configPath, error.Message);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
