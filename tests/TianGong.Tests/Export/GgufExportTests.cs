using TianGong.Checkpoints;
using TianGong.Export.Gguf;
using TianGong.Tokenizers;

namespace TianGong.Tests.Export;

public class GgufExportTests
{
    private static readonly string[] Poems =
        ["春眠不覺曉，處處聞啼鳥。夜來風雨聲，花落知多少。", "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。", "hello world, hello gguf"];

    /// <summary>The llama fixture (vocab 320) with a small byte-level BPE tokenizer beside it.</summary>
    private static string LlamaFolder()
    {
        var dir = TestModels.TempDir();
        foreach (var f in new[] { "config.json", "model.safetensors" }) File.Copy(TestModels.FixturePath("hf", "llama", f), Path.Combine(dir, f));
        var tokenizer = ByteLevelBpeTrainer.Train(Enumerable.Repeat(Poems, 20).SelectMany(p => p), new BpeTrainerOptions(VocabSize: 300, MinFrequency: 2));
        tokenizer.Save(Path.Combine(dir, "tokenizer.json"));
        return dir;
    }

    [Theory]
    [InlineData("f32", 0.0)]
    [InlineData("f16", 1e-3)]
    [InlineData("q8_0", 0.5 / 127)]
    [InlineData("q4_0", 1.0 / 8)] // a value opposite in sign to the block's extreme may clip from 8 steps to 7: one whole step
    public void Read_back_metadata_names_shapes_and_values_match_the_model(string type, double tolerance)
    {
        var dir = LlamaFolder();
        var path = Path.Combine(TestModels.TempDir(), "model.gguf");
        using var loaded = ModelFolder.Load(dir);
        GgufExporter.Export(loaded, path, GgufExporter.ParseType(type));

        var gguf = GgufReader.Open(path);
        Assert.Equal(3u, gguf.Version);
        Assert.Equal("llama", gguf.Metadata["general.architecture"]);
        Assert.Equal(2u, gguf.Metadata["llama.block_count"]);
        Assert.Equal(64u, gguf.Metadata["llama.embedding_length"]);
        Assert.Equal(4u, gguf.Metadata["llama.attention.head_count"]);
        Assert.Equal(2u, gguf.Metadata["llama.attention.head_count_kv"]);
        Assert.Equal(16u, gguf.Metadata["llama.rope.dimension_count"]);
        Assert.Equal("gpt2", gguf.Metadata["tokenizer.ggml.model"]);
        var tokens = (object[])gguf.Metadata["tokenizer.ggml.tokens"];
        Assert.Equal(320, tokens.Length);
        Assert.Equal("[PAD319]", tokens[319]);
        Assert.Equal(5, ((object[])gguf.Metadata["tokenizer.ggml.token_type"])[319]);
        Assert.NotEmpty((object[])gguf.Metadata["tokenizer.ggml.merges"]);

        var names = gguf.Tensors.Select(t => t.Name).ToHashSet();
        Assert.Equal(3 + 2 * 9, names.Count);
        Assert.Contains("blk.1.ffn_down.weight", names);
        Assert.Equal([320, 64], gguf.Tensors.Single(t => t.Name == "token_embd.weight").Shape);
        Assert.Equal([32, 64], gguf.Tensors.Single(t => t.Name == "blk.0.attn_k.weight").Shape);
        Assert.Equal(GgmlType.F32, gguf.Tensors.Single(t => t.Name == "blk.0.attn_norm.weight").Type);

        var state = loaded.Module.state_dict();
        foreach (var (key, gguName, heads) in new[] {
            ("model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight", 4), ("model.layers.1.self_attn.k_proj.weight", "blk.1.attn_k.weight", 2),
            ("model.layers.0.mlp.down_proj.weight", "blk.0.ffn_down.weight", 0), ("lm_head.weight", "output.weight", 0) })
        {
            using var ours = heads > 0 ? GgufExporter.PermuteForGgml(state[key], heads) : state[key].alias();
            var want = ours.contiguous().data<float>().ToArray();
            var got = gguf.ReadFloats(gguName);
            float scale = want.Max(Math.Abs);
            double worst = want.Zip(got, (a, b) => (double)Math.Abs(a - b)).Max();
            Assert.True(worst <= tolerance * scale * 1.02 + 1e-7, $"{gguName} ({type}): max error {worst}, max |w| {scale}");
        }
    }

    [Fact]
    public void Q_and_k_rows_are_interleaved_per_head_as_ggml_rotary_expects()
    {
        // One head of dim 4: HF pairs rows (0, 2) and (1, 3); ggml pairs adjacent rows, so the order becomes 0, 2, 1, 3.
        using var w = arange(8, dtype: ScalarType.Float32).view(4, 2);
        using var permuted = GgufExporter.PermuteForGgml(w, heads: 1);
        Assert.Equal([0f, 1, 4, 5, 2, 3, 6, 7], permuted.data<float>().ToArray());
    }

    [Fact]
    public void The_export_command_writes_a_file_our_reader_opens()
    {
        var path = Path.Combine(TestModels.TempDir(), "m.gguf");
        var result = Cli.CliProcess.Run(TestModels.TempDir(), "export", "gguf", "--model", LlamaFolder(), "--out", path, "--type", "q8_0");
        Assert.True(result.ExitCode == 0, result.All);
        Assert.Equal(21, GgufReader.Open(path).Tensors.Count);
        Assert.Equal(GgmlType.Q8_0, GgufReader.Open(path).Tensors.Single(t => t.Name == "blk.0.ffn_up.weight").Type);
    }

    [Fact]
    public void A_family_the_exporter_does_not_cover_is_named()
    {
        using var loaded = ModelFolder.Load(TestModels.FixturePath("hf", "gpt2"));
        var e = Assert.Throws<TianGongException>(() => GgufExporter.Export(loaded, Path.Combine(TestModels.TempDir(), "x.gguf"), GgmlType.F16));
        Assert.Contains("model_type 'gpt2'", e.Message);
    }

    [Fact]
    public void A_file_that_is_not_gguf_is_one_line()
    {
        var path = Path.Combine(TestModels.TempDir(), "bad.gguf");
        File.WriteAllBytes(path, [1, 2, 3, 4, 5, 6, 7, 8]);
        Assert.Contains("not a GGUF file", Assert.Throws<TianGongException>(() => GgufReader.Open(path)).Message);
        File.WriteAllBytes(path, [0x47, 0x47, 0x55, 0x46, 3, 0]);
        Assert.Contains("ends inside its header", Assert.Throws<TianGongException>(() => GgufReader.Open(path)).Message);
    }
}
