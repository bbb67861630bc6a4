using System.Text.Json.Nodes;
using TianGong.Tests.Cli;

namespace TianGong.Tests.Tokenizers;

/// <summary>`tiangong tokenizer encode|decode|chat` run as a user runs them, on a small hand-written tokenizer folder.</summary>
[Trait("Category", "Slow")]
public sealed class TokenizerCommandTests : IDisposable
{
    private readonly string folder = TestModels.TempDir();

    public void Dispose() => Directory.Delete(folder, recursive: true);

    /// <summary>WordLevel over whitespace-split words, with a bos-adding template: ids are easy to read.</summary>
    private void WriteTokenizer(string? chatTemplate = null)
    {
        string[] words = ["<unk>", "<s>", "</s>", "@user", "hi", "there", "<|im_start|>", "<|im_end|>", "user", "assistant"];
        var vocab = new JsonObject();
        for (int i = 0; i < words.Length; i++) vocab[words[i]] = i;
        var json = new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray(
                new JsonObject { ["id"] = 1, ["content"] = "<s>", ["special"] = true },
                new JsonObject { ["id"] = 2, ["content"] = "</s>", ["special"] = true }),
            ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject { ["type"] = "WhitespaceSplit" },
            ["post_processor"] = JsonNode.Parse("""{"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "</s>", "type_id": 1}}], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}, "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}}"""),
            ["decoder"] = null,
            ["model"] = new JsonObject { ["type"] = "WordLevel", ["unk_token"] = "<unk>", ["vocab"] = vocab },
        };
        File.WriteAllText(Path.Combine(folder, "tokenizer.json"), json.ToJsonString());
        var config = new JsonObject { ["bos_token"] = "<s>", ["eos_token"] = "</s>" };
        if (chatTemplate is not null) config["chat_template"] = chatTemplate;
        File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), config.ToJsonString());
    }

    [Fact]
    public void Encode_takes_text_starting_with_an_at_sign_literally_and_adds_special_tokens_unless_told_not_to()
    {
        WriteTokenizer();
        // System.CommandLine would read "@user hi" as a response file named "user hi"; response files are off.
        var r = CliProcess.Run(folder, "tokenizer", "encode", "--tokenizer", folder, "--text", "@user hi");
        Assert.True(r.ExitCode == 0, r.All);
        Assert.Equal("1,3,4", r.Stdout.Trim());

        r = CliProcess.Run(folder, "tokenizer", "encode", "--tokenizer", Path.Combine(folder, "tokenizer.json"), "--text", "@user  hi xyz",
            "--no-special", "--json");
        Assert.True(r.ExitCode == 0, r.All);
        Assert.Equal("""{"ids":[3,4,0],"tokens":["@user","hi","<unk>"],"offsets":[[0,5],[7,9],[10,13]],"type_ids":[0,0,0]}""", r.Stdout.Trim());

        // A pair through the template's pair form: offsets of the second text's tokens are in that text.
        r = CliProcess.Run(folder, "tokenizer", "encode", "--tokenizer", folder, "--text", "@user hi", "--pair", "𝟏 there", "--json");
        Assert.True(r.ExitCode == 0, r.All);
        Assert.Equal("""{"ids":[1,3,4,2,0,5,2],"tokens":["<s>","@user","hi","</s>","<unk>","there","</s>"],"offsets":[[0,0],[0,5],[6,8],[0,0],[0,1],[2,7],[0,0]],"type_ids":[0,0,0,0,1,1,1]}""",
            r.Stdout.Trim());

        r = CliProcess.Run(folder, "tokenizer", "decode", "--tokenizer", folder, "--ids", "1,3,4,2", "--skip-special");
        Assert.True(r.ExitCode == 0, r.All);
        Assert.Equal("@user hi", r.Stdout.Trim());
    }

    [Fact]
    public void Encode_reads_a_folder_with_only_a_SentencePiece_model()
    {
        File.Copy(Path.Combine(AppContext.BaseDirectory, "Fixtures", "tokenizers", "sentencepiece", "llama2-tokenizer.model"), Path.Combine(folder, "tokenizer.model"));
        var r = CliProcess.Run(folder, "tokenizer", "encode", "--tokenizer", folder, "--text", "Hello, world!", "--pair", "Hi");
        Assert.True(r.ExitCode == 0, r.All);
        // Llama's bos template, as LlamaTokenizerFast: <s> A <s> B (ids from Hugging Face tokenizers).
        Assert.Equal("1,15043,29892,3186,29991,1,6324", r.Stdout.Trim());
    }

    [Fact]
    public void Chat_prints_exactly_the_rendered_template_and_fails_with_the_template_message()
    {
        const string template = "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('No system turns, please: ' ~ m.content) }}{% endif %}"
            + "<|im_start|>{{ m.role }}\n{{ m.content | trim }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        WriteTokenizer(template);
        var messages = Path.Combine(folder, "conversation.json");
        File.WriteAllText(messages, """{"messages": [{"role": "user", "content": " hi there "}], "tools": []}""");

        var r = CliProcess.Run(folder, "tokenizer", "chat", "--tokenizer", folder, "--messages", messages, "--add-generation-prompt");
        Assert.True(r.ExitCode == 0, r.All);
        Assert.Equal("<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n", r.Stdout);

        // chat_template.jinja takes priority over tokenizer_config.json's template, as in transformers.
        File.WriteAllText(Path.Combine(folder, "chat_template.jinja"), "{{ messages | length }} message(s)\n{% if add_generation_prompt %}>{% endif %}");
        r = CliProcess.Run(folder, "tokenizer", "chat", "--tokenizer", folder, "--messages", messages);
        Assert.Equal("1 message(s)\n", r.Stdout);
        File.Delete(Path.Combine(folder, "chat_template.jinja"));

        File.WriteAllText(messages, """[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]""");
        r = CliProcess.Run(folder, "tokenizer", "chat", "--tokenizer", folder, "--messages", messages);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("No system turns, please: be brief", r.Stderr);
        Assert.Equal("", r.Stdout);
    }
}
