using System.Reflection;
using TianGong.Training;

namespace TianGong.Cli.Commands;

/// <summary>The configs/*.json files, embedded so that `demo` and `--config poetry-tiny` work from any folder.</summary>
internal static class BuiltInConfigs
{
    public static IReadOnlyList<string> Names =>
        Assembly.GetExecutingAssembly().GetManifestResourceNames()
            .Where(n => n.StartsWith("configs/") && n.EndsWith(".json"))
            .Select(n => n["configs/".Length..^".json".Length]).Order().ToList();

    /// <summary>A path to a config file, or the name of a built-in one (poetry-tiny, poetry-small).</summary>
    public static PretrainConfig Load(string pathOrName)
    {
        if (File.Exists(pathOrName)) return PretrainConfig.Load(pathOrName);
        var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream($"configs/{pathOrName}.json");
        if (stream is null)
            throw new TianGongException($"--config: no file '{pathOrName}' and no built-in config of that name (built in: {string.Join(", ", Names)})");
        using var reader = new StreamReader(stream);
        var node = System.Text.Json.Nodes.JsonNode.Parse(reader.ReadToEnd())!;
        return PretrainConfig.Parse(node, $"{pathOrName} (built-in)");
    }
}
