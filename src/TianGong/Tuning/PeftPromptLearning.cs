using System.Text.Json.Nodes;

namespace TianGong.Tuning;

/// <summary>What PEFT's prompt-learning configs (PROMPT_TUNING, PREFIX_TUNING) must say for TianGong to load them.</summary>
internal static class PeftPromptLearning
{
    /// <summary>
    /// TianGong's adapters are for decoder-only causal LMs: PEFT's <c>task_type</c> CAUSAL_LM (absent is taken as that)
    /// and one transformer submodule (encoder-decoder models have two).
    /// </summary>
    public static void CheckCausalDecoder(JsonObject json, string path)
    {
        if (json["task_type"] is JsonValue tt && tt.TryGetValue<string>(out var task) && task != "CAUSAL_LM")
            throw new TianGongException($"{path}: task_type '{task}' is not CAUSAL_LM");
        if (json["num_transformer_submodules"] is JsonValue sv && sv.TryGetValue<int>(out var sub) && sub != 1)
            throw new TianGongException($"{path}: num_transformer_submodules {sub}: only decoder-only models (1) are supported");
    }
}
