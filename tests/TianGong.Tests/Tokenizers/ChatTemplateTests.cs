using System.Text.Json;
using System.Text.Json.Nodes;
using TianGong.Tokenizers;
using TianGong.Tokenizers.Templates;

namespace TianGong.Tests.Tokenizers;

/// <summary>
/// Chat templates rendered by our Jinja interpreter against what Python's Jinja2 renders in transformers' environment
/// (Fixtures/tokenizers/chat/render.py wrote jinja2-expected.json): the published templates of Llama 3, Qwen3, Gemma 3,
/// DeepSeek V3, Mistral and Llama 3.1 (with tools) on conversations with system prompts, several turns, reasoning
/// blocks, tool calls and tool results.
/// </summary>
public sealed class ChatTemplateTests
{
    private static readonly string ChatFixtures = Path.Combine(AppContext.BaseDirectory, "Fixtures", "tokenizers", "chat");
    private static readonly Lazy<JsonObject> Cases = new(() => JsonNode.Parse(File.ReadAllText(Path.Combine(ChatFixtures, "chat-cases.json")))!.AsObject());
    private static readonly Lazy<JsonObject> Expected = new(() =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(ChatFixtures, "jinja2-expected.json")))!["results"]!.AsObject());

    /// <summary>Renders one case as transformers does: messages, tools (None when absent), add_generation_prompt, extra variables.</summary>
    private static string Render(ChatTemplate template, string caseName)
    {
        var c = Cases.Value[caseName]!;
        var extra = c["extra"]?.AsObject().ToDictionary(p => p.Key, p => p.Value?.DeepClone()) ?? [];
        return template.Render(c["messages"]!.AsArray(), c["tools"]?.AsArray(), c["add_generation_prompt"]?.GetValue<bool>() ?? false, extra);
    }

    private static void AssertAllCases(string templateName, ChatTemplate template)
    {
        var failures = new List<string>();
        foreach (var (caseName, _) in Cases.Value)
        {
            var expected = Expected.Value[$"{templateName}/{caseName}"]!;
            if (expected["error"] is { } error)
            {
                var raised = Assert.ThrowsAny<JinjaException>(() => Render(template, caseName));
                if (raised.Message != error.GetValue<string>()) failures.Add($"{caseName}: expected the error `{error}`, got `{raised.Message}`");
                continue;
            }
            string want = expected["output"]!.GetValue<string>();
            string got;
            try
            {
                got = Render(template, caseName);
            }
            catch (TianGongException e)
            {
                failures.Add($"{caseName}: {e.Message}");
                continue;
            }
            if (got != want) failures.Add($"{caseName}:\n--- Jinja2\n{want}\n--- ours\n{got}");
        }
        Assert.True(failures.Count == 0, string.Join("\n\n", failures));
    }

    public static TheoryData<string> PublishedTemplates() => ["llama3", "llama3_1", "qwen3", "gemma3", "deepseek_v3"];

    [Theory]
    [Trait("Category", "Slow")]
    [MemberData(nameof(PublishedTemplates))]
    public void Published_templates_render_as_Jinja2_does(string name)
    {
        var dir = PublishedTokenizers.ModelsDir(name);
        var tokenizer = TokenizerLoader.Load(dir)!;
        AssertAllCases(name, tokenizer.ChatTemplate!);
    }

    /// <summary>Mistral's and Llama 3.1's tool-calling templates (Fixtures/tokenizers/chat/published), with their bos/eos.</summary>
    [Theory]
    [InlineData("mistral", "<s>", "</s>")]
    [InlineData("llama3_1_tools", "<|begin_of_text|>", "<|eot_id|>")]
    public void Tool_calling_templates_render_as_Jinja2_does(string name, string bos, string eos) =>
        AssertAllCases(name, ChatTemplate.FromJinja(File.ReadAllText(Path.Combine(ChatFixtures, "published", name + ".jinja")), bos, eos, name + ".jinja"));

    [Fact]
    public void Default_ChatML_template_renders_as_Jinja2_does() => AssertAllCases("chatml", ChatTemplate.Default);

    /// <summary>features.jinja exercises, one per line, the Jinja constructs published templates use.</summary>
    [Fact]
    public void Feature_template_renders_as_Jinja2_does() =>
        AssertAllCases("features", ChatTemplate.FromJinja(File.ReadAllText(Path.Combine(ChatFixtures, "features.jinja")), null, null, "features.jinja"));
}
