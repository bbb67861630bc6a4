using System.Text.Json.Nodes;
using TianGong.Checkpoints;

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

    public static void Save(string runDir, nn.Module model, IOptimizer optimizer, State state, int keep)
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

    /// <summary>
    /// The run-folder rule every training command shares: --resume needs a checkpoint to continue, and a fresh run never
    /// writes over one.
    /// </summary>
    public static void CheckRunFolder(string outDir, bool resume)
    {
        bool hasRun = List(outDir).Count > 0;
        if (resume && !hasRun)
            throw new TianGongException($"{outDir}: nothing to resume (no checkpoint-N folder); run without --resume to start");
        if (!resume && hasRun)
            throw new TianGongException($"{outDir}: already holds a training run; pass --resume to continue it, or choose another --out");
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

    /// <summary>
    /// Removes what a save killed part-way left behind in the run folder: <c>.checkpoint-N.tmp-*/</c> folders and
    /// <c>*.tmp-*</c> files (model.safetensors, metrics.jsonl, loss.png written atomically). Only one run uses a run
    /// folder at a time, so at start every temporary name in it belongs to a dead save. Returns what was removed.
    /// </summary>
    public static IReadOnlyList<string> CleanUpInterruptedSaves(string runDir)
    {
        if (!Directory.Exists(runDir)) return [];
        var removed = new List<string>();
        foreach (var dir in Directory.GetDirectories(runDir, $".{Prefix}*.tmp-*"))
        {
            Directory.Delete(dir, recursive: true);
            removed.Add(dir);
        }
        foreach (var file in Directory.GetFiles(runDir, "*.tmp-*"))
        {
            File.Delete(file);
            removed.Add(file);
        }
        return removed;
    }

    /// <summary>Restores the newest complete checkpoint into <paramref name="model"/> and <paramref name="optimizer"/>.</summary>
    public static State LoadLatest(string runDir, nn.Module model, IOptimizer optimizer)
    {
        var all = List(runDir);
        if (all.Count == 0)
            throw new TianGongException($"{runDir}: no complete checkpoint to resume from (expected a {Prefix}N folder with {StateFile})");
        var (step, dir) = all[^1];
        var statePath = Path.Combine(dir, StateFile);
        var json = ConfigJson.ReadFile(statePath);
        long Field(string name) => json[name]?.GetValue<long>() ?? throw new TianGongException($"{statePath}: missing '{name}'");
        if (Field("step") != step) throw new TianGongException($"{statePath}: step {Field("step")} does not match its folder name");

        using (var weights = SafeTensorsFile.Open(Path.Combine(dir, ModelFolder.WeightsFile)))
            CopyExactly(weights, model.state_dict());
        var optimizerPath = Path.Combine(dir, OptimizerFile);
        WithTensors(optimizerPath, state => optimizer.LoadStateDict(state, Field("optimizer_step"), optimizerPath));
        var config = json["config"] as JsonObject ?? throw new TianGongException($"{statePath}: missing 'config'");
        return new State(step, Field("tokens_seen"), Field("seed"), config);
    }

    private static void WithTensors(string path, Action<Dictionary<string, Tensor>> use)
    {
        var tensors = SafeTensors.Load(path);
        try
        {
            use(tensors);
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }

    /// <summary>
    /// A checkpoint holds the state dict of the very module being trained (a wrapped or adapted model included),
    /// so its keys must match one to one: no Hugging Face renaming here. Tensors are copied one at a time from the
    /// mapped file, so resuming needs no second copy of the weights in memory.
    /// </summary>
    private static void CopyExactly(SafeTensorsFile saved, Dictionary<string, Tensor> into)
    {
        var savedKeys = saved.Keys.ToHashSet();
        var missing = into.Keys.Where(k => !savedKeys.Contains(k)).ToList();
        var unexpected = saved.Keys.Where(k => !into.ContainsKey(k)).ToList();
        if (missing.Count > 0 || unexpected.Count > 0)
            throw new TianGongException($"{saved.Path}: checkpoint does not match the model" +
                (missing.Count > 0 ? $"; missing: {string.Join(", ", missing.Take(10))}" : "") +
                (unexpected.Count > 0 ? $"; unexpected: {string.Join(", ", unexpected.Take(10))}" : ""));
        using var _ = no_grad();
        foreach (var (key, target) in into)
        {
            var shape = saved.GetInfo(key).Shape;
            if (!shape.SequenceEqual(target.shape))
                throw new TianGongException($"{saved.Path}: tensor '{key}' has shape [{string.Join(", ", shape)}], the model needs [{string.Join(", ", target.shape)}]");
            using var t = saved.Read(key);
            target.copy_(t);
        }
    }
}
