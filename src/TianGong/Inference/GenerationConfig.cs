using System.Text.Json.Nodes;

namespace TianGong.Inference;

/// <summary>
/// The sampling defaults of a model folder's generation_config.json, as Hugging Face's GenerationConfig reads them:
/// every field may be absent (null), and <c>do_sample</c> false (its default) means greedy decoding whatever
/// temperature, top_k or top_p say. Flags and request fields come as a second GenerationConfig with only what was
/// given set, and <see cref="OverriddenBy"/> lays them over the folder's values.
/// </summary>
/// <param name="EosTokenId">One id or several (the file may hold an int or a list); any of them ends a sequence.</param>
public sealed record GenerationConfig(
    bool? DoSample = null,
    double? Temperature = null,
    int? TopK = null,
    double? TopP = null,
    double? RepetitionPenalty = null,
    int? MaxNewTokens = null,
    int? MinNewTokens = null,
    IReadOnlyList<int>? EosTokenId = null,
    int? BosTokenId = null,
    int? PadTokenId = null)
{
    public const string FileName = "generation_config.json";

    /// <summary>HF's default top_k when sampling and generation_config.json does not say.</summary>
    public const int DefaultTopK = 50;

    /// <summary>When neither the folder nor the caller gives max_new_tokens.</summary>
    public const int DefaultMaxNewTokens = 64;

    /// <summary>The folder's generation_config.json; a folder without one has HF's defaults (greedy).</summary>
    public static GenerationConfig Load(string folder) => Read(folder) ?? new GenerationConfig();

    /// <summary>The folder's generation_config.json, or null when it has none.</summary>
    public static GenerationConfig? Read(string folder)
    {
        var path = Path.Combine(folder, FileName);
        return File.Exists(path) ? Parse(ConfigJson.ReadFile(path), path) : null;
    }

    /// <summary>Reads the fields TianGong uses and skips the rest (transformers_version, use_cache, ...), as transformers does.</summary>
    public static GenerationConfig Parse(JsonNode root, string where)
    {
        if (root is not JsonObject obj) throw new TianGongException($"{where}: expected a JSON object");
        var config = ConfigJson.Read<GenerationConfig>(obj, where, strict: false, "eos_token_id") with { EosTokenId = ReadEos(obj["eos_token_id"], where) };
        config.Validate(where);
        return config;
    }

    private static int[]? ReadEos(JsonNode? node, string where)
    {
        try
        {
            return node switch
            {
                null => null,
                JsonArray list => [.. list.Select(n => n!.GetValue<int>())],
                _ => [node.GetValue<int>()],
            };
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or NullReferenceException)
        {
            throw new TianGongException($"{where}: field 'eos_token_id' must be an integer or a list of integers");
        }
    }

    /// <summary>This config after the range checks a loaded file gets (<paramref name="where"/> names the source in errors).</summary>
    public GenerationConfig Validated(string where)
    {
        Validate(where);
        return this;
    }

    private void Validate(string where)
    {
        if (Temperature is { } t) Models.ConfigChecks.InRange($"{where}: temperature", t, 0, 100);
        if (TopK is { } k) Models.ConfigChecks.InRange($"{where}: top_k", k, 0, int.MaxValue);
        if (TopP is { } p) Models.ConfigChecks.InRange($"{where}: top_p", p, 0, 1, minInclusive: false);
        if (RepetitionPenalty is { } r) Models.ConfigChecks.InRange($"{where}: repetition_penalty", r, 0, 100, minInclusive: false);
        if (MaxNewTokens is { } max) Models.ConfigChecks.InRange($"{where}: max_new_tokens", max, 1, int.MaxValue);
        if (MinNewTokens is { } min) Models.ConfigChecks.InRange($"{where}: min_new_tokens", min, 0, int.MaxValue);
        if (EosTokenId?.Any(id => id < 0) == true) throw new TianGongException($"{where}: eos_token_id must not be negative");
    }

    /// <summary>
    /// Each field of <paramref name="given"/> that is set replaces the folder's. A temperature given without
    /// do_sample also decides it (above zero samples, zero is greedy), as OpenAI's API and our CLI mean it.
    /// </summary>
    public GenerationConfig OverriddenBy(GenerationConfig given) => new(
        DoSample: given.DoSample ?? (given.Temperature is { } t ? t >= SamplingOptions.GreedyBelow : DoSample),
        Temperature: given.Temperature ?? Temperature,
        TopK: given.TopK ?? TopK,
        TopP: given.TopP ?? TopP,
        RepetitionPenalty: given.RepetitionPenalty ?? RepetitionPenalty,
        MaxNewTokens: given.MaxNewTokens ?? MaxNewTokens,
        MinNewTokens: given.MinNewTokens ?? MinNewTokens,
        EosTokenId: given.EosTokenId ?? EosTokenId,
        BosTokenId: given.BosTokenId ?? BosTokenId,
        PadTokenId: given.PadTokenId ?? PadTokenId);

    /// <summary>The resolved options: without do_sample greedy (temperature 0), with it HF's defaults for what is unset.</summary>
    public SamplingOptions ToSamplingOptions()
    {
        bool sample = DoSample ?? false;
        return new SamplingOptions(
            MaxNewTokens: MaxNewTokens ?? DefaultMaxNewTokens,
            Temperature: sample ? Temperature ?? 1.0 : 0,
            TopK: sample ? TopK ?? DefaultTopK : 0,
            TopP: sample ? TopP ?? 1.0 : 1.0,
            RepetitionPenalty: RepetitionPenalty ?? 1.0,
            MinNewTokens: MinNewTokens ?? 0,
            EosTokenIds: EosTokenId);
    }
}
