using System.Text.RegularExpressions;

namespace TianGong.Checkpoints;

/// <summary>
/// The file names of a Hugging Face model folder. Kept apart from the code that reads and writes them, so that
/// <see cref="ModelFolder"/> (which loads whole models) and <see cref="ShardedSafeTensors"/> (which lays weights out
/// in shards) both depend on this one small type instead of on each other.
/// </summary>
public static partial class CheckpointFiles
{
    public const string Config = "config.json";
    public const string Weights = "model.safetensors";
    public const string ShardIndex = "model.safetensors.index.json";
    public const string Tokenizer = "tokenizer.json";
    public const string GenerationConfig = "generation_config.json";

    /// <summary>Shard names as transformers writes them: model-00001-of-00003.safetensors.</summary>
    public static string ShardName(int index, int count) => $"model-{index + 1:D5}-of-{count:D5}.safetensors";

    /// <summary>True for the files one weights layout or the other consists of (what a new save replaces).</summary>
    public static bool IsWeightFile(string name) => name == Weights || name == ShardIndex || ShardPattern().IsMatch(name);

    [GeneratedRegex(@"^model-\d{5}-of-\d{5}\.safetensors$")]
    private static partial Regex ShardPattern();
}
