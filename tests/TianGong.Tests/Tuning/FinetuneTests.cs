using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Models;
using TianGong.Training;
using TianGong.Tuning;
using TianGong.Tests.Training;

namespace TianGong.Tests.Tuning;

[Collection(nameof(GlobalRandomState))]
public class FinetuneTests
{
    [Fact]
    public void Lora_finetuning_writes_a_peft_adapter_lowers_the_loss_and_leaves_the_base_bit_identical()
    {
        var modelDir = TuningFolders.Model();
        var outDir = Path.Combine(TestModels.TempDir(), "lora");
        var result = Finetuning.Run(TuningFolders.Options(modelDir, outDir, FinetuneMethod.Lora, TuningFolders.TextFile(), steps: 12));

        var records = MetricsLog.Read(result.MetricsPath);
        Assert.Equal(12, records.Count);
        Assert.True(records[^1].TrainLoss < records[0].TrainLoss, $"loss {records[0].TrainLoss} → {records[^1].TrainLoss}");
        Assert.True(File.Exists(result.LossPlotPath));
        Assert.Equal(2 * ((4 * 32 + 32 * 4) + (4 * 32 + 16 * 4)), result.TrainableParameters); // r 4 on q (32→32) and v (32→16), 2 layers
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "adapter_config.json")))!;
        Assert.Equal("LORA", json["peft_type"]!.GetValue<string>());
        Assert.Equal(Path.GetFullPath(modelDir), json["base_model_name_or_path"]!.GetValue<string>());

        // The checkpoint holds the trained module: its base tensors are the folder's, bit for bit.
        var original = SafeTensors.Load(Path.Combine(modelDir, ModelFolder.WeightsFile));
        var trained = SafeTensors.Load(Path.Combine(TrainingCheckpoint.List(outDir)[^1].Dir, ModelFolder.WeightsFile));
        foreach (var (key, value) in original)
            Assert.True(value.eq(trained[key]).all().item<bool>(), $"{key} changed");
        Assert.Contains(trained.Keys, k => k.EndsWith("q_proj.lora_A.weight"));

        // The adapter folder applies through --adapter's path and changes the logits.
        using var base_ = ModelFolder.Load(modelDir);
        using var ids = tensor(new long[] { 1, 5, 9, 30 }).unsqueeze(0);
        using var _ = no_grad();
        using var before = base_.AsCausalLM("t").forward(ids);
        var adapted = AdapterFolder.Apply(base_, outDir);
        using var after = adapted.AsCausalLM("t").forward(ids);
        Assert.True((after - before).abs().max().item<float>() > 1e-4);
    }

    [Fact]
    public void Resuming_a_lora_run_gives_the_losses_of_an_uninterrupted_one()
    {
        var modelDir = TuningFolders.Model();
        var data = TuningFolders.TextFile();
        var whole = Path.Combine(TestModels.TempDir(), "whole");
        Finetuning.Run(TuningFolders.Options(modelDir, whole, FinetuneMethod.Lora, data, steps: 6));

        var parts = Path.Combine(TestModels.TempDir(), "parts");
        var options = TuningFolders.Options(modelDir, parts, FinetuneMethod.Lora, data, steps: 6);
        using (var cancel = new CancellationTokenSource())
        {
            var stopped = Finetuning.Run(options, new PretrainCallbacks(Progress: p => { if (p.Step == 3) cancel.Cancel(); }), cancel.Token);
            Assert.True(stopped.Interrupted);
        }
        Finetuning.Run(options with { Resume = true });
        Assert.Equal(MetricsLog.Read(Path.Combine(whole, MetricsLog.FileName)).Select(r => r.TrainLoss),
                     MetricsLog.Read(Path.Combine(parts, MetricsLog.FileName)).Select(r => r.TrainLoss));
    }

    [Fact]
    public void Full_finetuning_writes_a_model_folder_that_loads_with_changed_weights()
    {
        var modelDir = TuningFolders.Model("gpt2");
        var outDir = Path.Combine(TestModels.TempDir(), "full");
        Finetuning.Run(TuningFolders.Options(modelDir, outDir, FinetuneMethod.Full, TuningFolders.TextFile(), steps: 3));
        using var before = ModelFolder.Load(modelDir);
        using var after = ModelFolder.Load(outDir);
        Assert.NotNull(after.Tokenizer);
        var changed = before.Module.state_dict().Count(kv => !kv.Value.eq(after.Module.state_dict()[kv.Key]).all().item<bool>());
        Assert.Equal(before.Module.state_dict().Count, changed);
    }

    [Fact]
    public void Progressive_unfreezing_trains_the_top_layer_first_then_the_rest()
    {
        using var model = TestModels.Create("llama");
        var schedule = new ProgressiveUnfreezing(model, 2, new UnfreezeOptions(InitialLayers: 1, Every: 3, LayerLrDecay: 0.5));
        var early = schedule.TrainedAt(0);
        Assert.Equal(early, schedule.TrainedAt(2));
        Assert.Contains("model.layers.1.self_attn.q_proj.weight", early);
        Assert.Contains("lm_head.weight", early);
        Assert.Contains("model.norm.weight", early);
        Assert.DoesNotContain(early, n => n.StartsWith("model.layers.0.") || n.StartsWith("model.embed_tokens"));
        Assert.Equal(model.named_parameters().Select(p => p.name), schedule.TrainedAt(3));
        var groups = schedule.Groups(model, 0.1);
        Assert.Equal(1.0, groups.First(g => g.Parameters.Any(p => p.Name == "lm_head.weight")).LrScale);
        Assert.Equal(0.25, groups.First(g => g.Parameters.Any(p => p.Name.StartsWith("model.layers.0."))).LrScale);
        Assert.Equal(0.125, groups.First(g => g.Parameters.Any(p => p.Name == "model.embed_tokens.weight")).LrScale);

        // Trained for 3 steps with the bottom layer unfreezing at step 3: layer 0 and the embeddings never moved.
        var modelDir = TuningFolders.Model();
        var outDir = Path.Combine(TestModels.TempDir(), "unfreeze");
        Finetuning.Run(TuningFolders.Options(modelDir, outDir, FinetuneMethod.Unfreeze, TuningFolders.TextFile(), steps: 3));
        var before = SafeTensors.Load(Path.Combine(modelDir, ModelFolder.WeightsFile));
        var after = SafeTensors.Load(Path.Combine(outDir, ModelFolder.WeightsFile));
        foreach (var (key, value) in before)
        {
            bool same = value.eq(after[key]).all().item<bool>();
            Assert.True(same == (key.StartsWith("model.layers.0.") || key.StartsWith("model.embed_tokens")), $"{key}: unchanged = {same}");
        }
    }

    [Fact]
    public void Text_too_short_for_one_sequence_is_refused_before_training()
    {
        var modelDir = TuningFolders.Model();
        var path = Path.Combine(TestModels.TempDir(), "short.txt");
        File.WriteAllText(path, "春眠");
        var outDir = Path.Combine(TestModels.TempDir(), "short");
        var e = Assert.Throws<TianGongException>(() => Finetuning.Run(TuningFolders.Options(modelDir, outDir, FinetuneMethod.Lora, path)));
        Assert.StartsWith($"{path}: ", e.Message);
        Assert.Contains("--seq-len + 1 (17)", e.Message);
        Assert.False(Directory.Exists(outDir));
    }

    [Fact]
    public void A_bad_chat_row_is_reported_with_file_line_and_field_before_training()
    {
        var modelDir = TuningFolders.Model();
        var path = Path.Combine(TestModels.TempDir(), "chat.jsonl");
        File.WriteAllLines(path,
        [
            """{"messages":[{"role":"user","content":"春"},{"role":"assistant","content":"眠"}]}""",
            "",
            """{"messages":[{"role":"user","content":"春"},{"role":"assistant","content":7}]}""",
        ]);
        var outDir = Path.Combine(TestModels.TempDir(), "sft");
        var e = Assert.Throws<TianGongException>(() => Finetuning.Run(TuningFolders.Options(modelDir, outDir, FinetuneMethod.Lora, path, FinetuneTask.Sft)));
        Assert.Equal($"{path}:3: field 'messages[1].content': expected a string", e.Message);
        Assert.False(Directory.Exists(outDir));
    }
}
