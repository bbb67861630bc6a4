using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Tests.Cli;

namespace TianGong.Tests.Checkpoints;

public class ConvertTests
{
    private static readonly string Llama = TestModels.FixturePath("hf", "llama");

    private static Tensor Logits(string dir)
    {
        using var loaded = ModelFolder.Load(dir);
        using var _ = no_grad();
        var ids = tensor(Enumerable.Range(0, 24).Select(i => (long)(i * 37 % 320)).ToArray(), [2, 12]);
        return loaded.AsCausalLM("test").forward(ids);
    }

    [Fact]
    public void Bf16_convert_with_a_small_shard_limit_writes_hf_shards_that_load_back()
    {
        var dir = TestModels.TempDir();
        // 30 KB: the two 320x64 bf16 matrices (40 960 bytes) each get a shard of their own, the rest is grouped.
        var written = ModelFolder.Convert(Llama, dir, ScalarType.BFloat16, ShardedSafeTensors.ParseSize("30KB"));
        var shards = written.Where(f => f.EndsWith(".safetensors")).ToList();
        Assert.True(shards.Count >= 3, $"expected several shards, got {string.Join(", ", written)}");
        Assert.Equal(Enumerable.Range(0, shards.Count).Select(i => $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors"), shards);
        Assert.False(File.Exists(Path.Combine(dir, "model.safetensors")));

        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "model.safetensors.index.json")))!;
        var weightMap = index["weight_map"]!.AsObject();
        long totalBytes = 0;
        var keys = new List<string>();
        foreach (var shard in shards)
        {
            using var file = SafeTensorsFile.Open(Path.Combine(dir, shard));
            Assert.True(new FileInfo(file.Path).Length < 30_000 || file.Keys.Count == 1, $"{shard} exceeds the limit with several tensors");
            foreach (var key in file.Keys)
            {
                var info = file.GetInfo(key);
                Assert.Equal(ScalarType.BFloat16, info.DType);
                Assert.Equal(shard, weightMap[key]!.GetValue<string>());
                totalBytes += info.Shape.Aggregate(1L, (a, b) => a * b) * 2;
                keys.Add(key);
            }
        }
        Assert.Equal(totalBytes, index["metadata"]!["total_size"]!.GetValue<long>());
        Assert.Equal(keys.Order(), weightMap.Select(kv => kv.Key).Order());
        Assert.Equal(weightMap.Select(kv => kv.Key).Order(StringComparer.Ordinal), weightMap.Select(kv => kv.Key)); // sorted, as transformers writes it

        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!;
        Assert.Equal("bfloat16", config["torch_dtype"]!.GetValue<string>());
        Assert.Equal("llama", config["model_type"]!.GetValue<string>());
        Assert.Equal(File.ReadAllText(Path.Combine(Llama, "generation_config.json")), File.ReadAllText(Path.Combine(dir, "generation_config.json")));

        using var expected = Logits(Llama);
        using var actual = Logits(dir);
        double maxDiff = (actual - expected).abs().max().item<float>();
        double scale = expected.abs().max().item<float>();
        // bf16 keeps 8 significant bits: weights move by up to 2^-9 relative, logits by a few times that.
        Assert.True(maxDiff > 0 && maxDiff < 0.02 * scale, $"max |bf16 - fp32| = {maxDiff} (logit scale {scale})");
    }

    [Fact]
    public void Fp32_convert_round_trip_is_bit_exact_and_replaces_old_shards()
    {
        var dir = TestModels.TempDir();
        ModelFolder.Convert(Llama, dir, ScalarType.Float32, ShardedSafeTensors.ParseSize("30KB"));
        Assert.True(File.Exists(Path.Combine(dir, "model.safetensors.index.json")));
        // Converting again into the same folder with the default limit leaves one file and no stale shards.
        var written = ModelFolder.Convert(Llama, dir, ScalarType.Float32, ShardedSafeTensors.ParseSize("5GB"));
        Assert.Equal(["model.safetensors"], written);
        Assert.Equal(["config.json", "generation_config.json", "model.safetensors"], Directory.GetFiles(dir).Select(Path.GetFileName).Order());

        var original = SafeTensors.Load(Path.Combine(Llama, "model.safetensors"));
        var converted = SafeTensors.Load(Path.Combine(dir, "model.safetensors"));
        Assert.Equal(original.Keys.Order(), converted.Keys.Order());
        foreach (var (key, t) in original)
            Assert.True(t.eq(converted[key]).all().item<bool>() && t.shape.SequenceEqual(converted[key].shape), $"{key} changed in an fp32 round trip");
        using var a = Logits(Llama);
        using var b = Logits(dir);
        Assert.True(a.eq(b).all().item<bool>());
    }

    [Fact]
    public void Shard_plan_and_sizes_follow_huggingface()
    {
        Assert.Equal(5_000_000_000, ShardedSafeTensors.ParseSize("5GB"));
        Assert.Equal(200L << 20, ShardedSafeTensors.ParseSize("200MiB"));
        Assert.Equal(1234, ShardedSafeTensors.ParseSize("1234"));
        Assert.Contains("--max-shard-size", Assert.Throws<TianGongException>(() => ShardedSafeTensors.ParseSize("5 parsecs")).Message);
        var plan = ShardedSafeTensors.PlanShards([("a", 40), ("b", 50), ("c", 150), ("d", 30), ("e", 30), ("f", 50)], 100);
        // As huggingface_hub: an oversize tensor is closed into its own shard at once, ahead of the shard still open.
        Assert.Equal(["c", "a,b", "d,e", "f"], plan.Select(shard => string.Join(",", shard)));
    }

    [Fact]
    public void A_checkpoint_whose_shapes_do_not_match_the_config_names_the_field_the_tensor_and_its_shape()
    {
        var dir = TestModels.TempDir();
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(Llama, "config.json")))!;
        config["hidden_size"] = 32;
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        File.Copy(Path.Combine(Llama, "model.safetensors"), Path.Combine(dir, "model.safetensors"));
        var e = Assert.Throws<TianGongException>(() => ModelFolder.Load(dir));
        Assert.Contains("hidden_size is 32", e.Message);
        Assert.Contains("'model.embed_tokens.weight'", e.Message);
        Assert.Contains("[320, 64]", e.Message);
    }

    [Fact]
    public void Convert_command_writes_a_sharded_folder_and_rejects_bad_options()
    {
        var home = TestModels.TempDir();
        var output = Path.Combine(home, "bf16");
        var ok = CliProcess.Run(home, "convert", "--model", Llama, "--out", output, "--dtype", "bfloat16", "--max-shard-size", "30KB");
        Assert.True(ok.ExitCode == 0, ok.All);
        Assert.True(File.Exists(Path.Combine(output, "model.safetensors.index.json")));
        Assert.Equal("bfloat16", JsonNode.Parse(File.ReadAllText(Path.Combine(output, "config.json")))!["torch_dtype"]!.GetValue<string>());

        var bad = CliProcess.Run(home, "convert", "--model", Llama, "--out", Path.Combine(home, "x"), "--dtype", "int8");
        Assert.Equal(1, bad.ExitCode);
        Assert.Contains("--dtype", bad.All);
        var same = CliProcess.Run(home, "convert", "--model", output, "--out", output);
        Assert.Equal(1, same.ExitCode);
        Assert.Contains("must differ", same.All);
    }
}
