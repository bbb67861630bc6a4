using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Models;

namespace TianGong.Training;

/// <summary>
/// One resumable point of a run: <c>checkpoint-{step}/</c> holding model.safetensors, optimizer.safetensors and
/// trainer_state.json. It is written under a temporary name and renamed when complete, so a crash or Ctrl-C
/// mid-save leaves the previous checkpoint as the latest complete one.
/// Random state needs no file of its own: every step reseeds torch from (seed, step), and batches are a pure
/// function of (seed, step), so the step number is the whole data position and RNG state.
/// </summary>
public static class TrainingCheckpoint
{
    private const string Prefix = "checkpoint-";
    private const string StateFile = "trainer_state.json";
    private const string OptimizerFile = "optimizer.safetensors";

    public sealed record State(long Step, long TokensSeen, long Seed, JsonObject Config);

    public static void Save(string runDir, CausalLM model, AdamW optimizer, State state, int keep)
    {
        var final = Path.Combine(runDir, $"{Prefix}{state.Step}");
        var tmp = Path.Combine(runDir, $".{Prefix}{state.Step}.tmp-{Guid.NewGuid():N}");
        Directory.CreateDirectory(tmp);
        try
        {
            var meta = new Dictionary<string, string> { ["step"] = state.Step.ToString() };
            ModelFolder.SaveWeights(Path.Combine(tmp, ModelFolder.WeightsFile), model, meta);
            SafeTensors.Save(Path.Combine(tmp, OptimizerFile), optimizer.StateDict(), meta);
            var json = new JsonObject
            {
                ["step"] = state.Step,
                ["tokens_seen"] = state.TokensSeen,
                ["seed"] = state.Seed,
                ["optimizer_step"] = optimizer.StepCount,
                ["config"] = state.Config.DeepClone(),
            };
            ConfigJson.WriteAtomically(Path.Combine(tmp, StateFile), json.ToJsonString(ConfigJson.Options));
            if (Directory.Exists(final)) Directory.Delete(final, recursive: true);
            Directory.Move(tmp, final);
        }
        finally
        {
            if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true);
        }
        foreach (var old in List(runDir).SkipLast(keep)) Directory.Delete(old.Dir, recursive: true);
    }

    /// <summary>Complete checkpoints of a run, oldest first.</summary>
    public static IReadOnlyList<(long Step, string Dir)> List(string runDir)
    {
        if (!Directory.Exists(runDir)) return [];
        return Directory.GetDirectories(runDir, Prefix + "*")
            .Select(d => (Ok: long.TryParse(Path.GetFileName(d)[Prefix.Length..], out var s), Step: s, Dir: d))
            .Where(x => x.Ok && File.Exists(Path.Combine(x.Dir, StateFile)))
            .OrderBy(x => x.Step)
            .Select(x => (x.Step, x.Dir))
            .ToList();
    }

    /// <summary>Restores the newest complete checkpoint into <paramref name="model"/> and <paramref name="optimizer"/>.</summary>
    public static State LoadLatest(string runDir, CausalLM model, AdamW optimizer)
    {
        var all = List(runDir);
        if (all.Count == 0)
            throw new TianGongException($"{runDir}: no complete checkpoint to resume from (expected a {Prefix}N folder with {StateFile})");
        var (step, dir) = all[^1];
        var statePath = Path.Combine(dir, StateFile);
        var json = ConfigJson.ReadFile(statePath);
        long Field(string name) => json[name]?.GetValue<long>() ?? throw new TianGongException($"{statePath}: missing '{name}'");
        if (Field("step") != step) throw new TianGongException($"{statePath}: step {Field("step")} does not match its folder name");

        ModelFolder.LoadWeights(dir, model, model.Config.ModelType);
        var optimizerPath = Path.Combine(dir, OptimizerFile);
        var optimizerState = SafeTensors.Load(optimizerPath);
        try
        {
            optimizer.LoadStateDict(optimizerState, Field("optimizer_step"), optimizerPath);
        }
        finally
        {
            foreach (var t in optimizerState.Values) t.Dispose();
        }
        var config = json["config"] as JsonObject ?? throw new TianGongException($"{statePath}: missing 'config'");
        return new State(step, Field("tokens_seen"), Field("seed"), config);
    }
}
