using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json.Nodes;
using TianGong.Checkpoints;

namespace TianGong.Tests.Checkpoints;

/// <summary>
/// Model folders made by an attacker. Every load must end (quickly) in one line of TianGongException, never quote the
/// bytes of a file it refused, and never open anything outside the folder. "Never opened" is tested with named pipes
/// outside the folder: opening one for reading blocks until a writer comes, so a load that touched it would hang
/// and the test's timeout would fail it.
/// </summary>
public sealed class HostileFolderTests : IDisposable
{
    private const string Secret = "root:x:0:0:SECRET-LINE";
    private static readonly string Llama = TestModels.FixturePath("hf", "llama");

    private readonly string root = TestModels.TempDir();
    private readonly string folder;
    private readonly string outsideFile;
    private readonly string outsidePipe;

    public HostileFolderTests()
    {
        folder = Path.Combine(root, "model");
        Directory.CreateDirectory(folder);
        File.Copy(Path.Combine(Llama, "config.json"), Path.Combine(folder, "config.json"));
        File.Copy(Path.Combine(Llama, "model.safetensors"), Path.Combine(folder, "model.safetensors"));
        outsideFile = Path.Combine(root, "passwd");
        File.WriteAllText(outsideFile, Secret + "\n");
        outsidePipe = Path.Combine(root, "pipe");
        MakeFifo(outsidePipe);
    }

    public void Dispose() => Directory.Delete(root, recursive: true);

    [Fact]
    public void An_index_naming_a_path_that_climbs_out_of_the_folder_is_refused_without_opening_it()
    {
        UseIndex("../pipe", "../passwd");
        var message = LoadError();
        Assert.Contains("not a plain file name", message);
        Assert.Contains("../pipe", message);
    }

    [Fact]
    public void An_index_naming_an_absolute_path_is_refused_without_opening_it()
    {
        UseIndex(outsidePipe);
        Assert.Contains("not a plain file name", LoadError());
    }

    [Fact]
    public void An_index_entry_that_is_a_number_a_directory_or_a_missing_shard_is_one_line()
    {
        File.Delete(Path.Combine(folder, "model.safetensors"));
        File.WriteAllText(Path.Combine(folder, CheckpointFiles.ShardIndex), """{"weight_map": {"lm_head.weight": 7}}""");
        Assert.Contains("weight_map['lm_head.weight'] is a number", LoadError());

        Directory.CreateDirectory(Path.Combine(folder, "shard.safetensors"));
        UseIndex("shard.safetensors");
        Assert.Contains("is a directory", LoadError());

        UseIndex("model-00001-of-00002.safetensors");
        Assert.Contains("shard listed in model.safetensors.index.json not found", LoadError());

        File.WriteAllText(Path.Combine(folder, CheckpointFiles.ShardIndex), """{"weight_map": []}""");
        Assert.Contains("missing 'weight_map'", LoadError());
    }

    [Fact]
    public void Weights_linked_to_a_file_outside_the_folder_are_refused_and_its_bytes_never_printed()
    {
        ReplaceWithLink("model.safetensors", outsideFile);
        var message = LoadError();
        Assert.Contains("outside the model folder", message);
        Assert.DoesNotContain("SECRET", message);
        Assert.DoesNotContain(BinaryPrimitives.ReadUInt64LittleEndian(Encoding.ASCII.GetBytes(Secret)).ToString(), message);

        ReplaceWithLink("model.safetensors", outsidePipe);
        Assert.Contains("outside the model folder", LoadError());
    }

    [Fact]
    public void A_named_pipe_as_weights_config_or_tokenizer_is_refused_and_does_not_hang()
    {
        File.Delete(Path.Combine(folder, "model.safetensors"));
        MakeFifo(Path.Combine(folder, "model.safetensors"));
        Assert.Contains("is a named pipe, not a regular file", LoadError());

        File.Delete(Path.Combine(folder, "model.safetensors"));
        File.Copy(Path.Combine(Llama, "model.safetensors"), Path.Combine(folder, "model.safetensors"));
        MakeFifo(Path.Combine(folder, "tokenizer.json"));
        Assert.Contains("tokenizer.json: is a named pipe", LoadError());

        File.Delete(Path.Combine(folder, "tokenizer.json"));
        File.Delete(Path.Combine(folder, "config.json"));
        MakeFifo(Path.Combine(folder, "config.json"));
        Assert.Contains("config.json: is a named pipe", LoadError());
    }

    [Fact]
    public void Json_files_linked_to_dev_zero_or_larger_than_the_limit_are_refused_before_reading()
    {
        ReplaceWithLink("tokenizer.json", "/dev/zero");
        Assert.Contains("outside the model folder", LoadError());
        File.Delete(Path.Combine(folder, "tokenizer.json"));

        // A sparse 65 MiB file: refused from its size, without reading it.
        using (var big = File.Create(Path.Combine(folder, "tokenizer_config.json"))) big.SetLength(65L << 20);
        Assert.Contains("over the 64 MiB limit", LoadError());
        File.Delete(Path.Combine(folder, "tokenizer_config.json"));

        using (var big = File.Create(Path.Combine(folder, "config.json"))) big.SetLength(65L << 20);
        Assert.Contains("over the 64 MiB limit", LoadError());
    }

    [Theory]
    [InlineData("[]", "expected a JSON object, got an array")]
    [InlineData("""{"model_type": 7}""", "missing 'model_type' or not a string")]
    [InlineData("\"llama\"", "expected a JSON object")]
    public void A_config_that_is_not_an_object_is_one_line(string text, string expected)
    {
        File.WriteAllText(Path.Combine(folder, "config.json"), text);
        Assert.Contains(expected, LoadError());
    }

    [Theory]
    [InlineData("vocab_size", 1_000_000L)]
    [InlineData("vocab_size", 2147483647L)]
    [InlineData("intermediate_size", 2147483647L)]
    [InlineData("num_hidden_layers", 400L)]
    [InlineData("hidden_size", 2147483647L)]
    [InlineData("max_position_embeddings", 2147483647L)]
    public void A_config_that_does_not_fit_its_weights_fails_naming_the_field_before_anything_is_built(string field, long value)
    {
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "config.json")))!;
        config[field] = value;
        if (field == "hidden_size") config["head_dim"] = 16; // else hidden_size / heads would not be a whole head
        File.WriteAllText(Path.Combine(folder, "config.json"), config.ToJsonString());
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var message = LoadError();
        Assert.Contains($"{field}", message);
        Assert.Contains($"{value}", message);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"took {clock.Elapsed}");
    }

    [Fact]
    public void A_gpt2_config_with_more_positions_than_its_weights_fails_naming_n_positions()
    {
        var gpt2 = Path.Combine(root, "gpt2");
        Directory.CreateDirectory(gpt2);
        var config = JsonNode.Parse(File.ReadAllText(TestModels.FixturePath("hf", "gpt2", "config.json")))!;
        config["n_positions"] = int.MaxValue;
        File.WriteAllText(Path.Combine(gpt2, "config.json"), config.ToJsonString());
        File.Copy(TestModels.FixturePath("hf", "gpt2", "model.safetensors"), Path.Combine(gpt2, "model.safetensors"));
        Assert.Contains("n_positions is 2147483647", LoadError(gpt2));
    }

    [Fact]
    public void A_tensor_name_that_is_not_utf8_is_one_line()
    {
        var header = Encoding.UTF8.GetBytes("""{"a\u00e9":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""");
        header[3] = 0xFF; // breaks the two-byte é
        var bytes = new byte[8 + header.Length + 4];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)header.Length);
        header.CopyTo(bytes, 8);
        File.WriteAllBytes(Path.Combine(folder, "model.safetensors"), bytes);
        Assert.Contains("not valid UTF-8", LoadError());
    }

    [Fact]
    public void Links_that_stay_inside_the_folder_load_and_so_does_a_hub_cache_snapshot()
    {
        File.Move(Path.Combine(folder, "model.safetensors"), Path.Combine(folder, "weights.bin"));
        File.CreateSymbolicLink(Path.Combine(folder, "model.safetensors"), "weights.bin");
        using (ModelFolder.Load(folder)) { }

        // Hugging Face's cache: models--org--name/snapshots/REV/* are links to ../../blobs/HASH.
        var repository = Path.Combine(root, "models--org--name");
        var snapshot = Path.Combine(repository, "snapshots", "abc123");
        Directory.CreateDirectory(Path.Combine(repository, "blobs"));
        Directory.CreateDirectory(snapshot);
        foreach (var (name, blob) in new[] { ("config.json", "c0ffee"), ("model.safetensors", "beef") })
        {
            File.Copy(Path.Combine(Llama, name), Path.Combine(repository, "blobs", blob));
            File.CreateSymbolicLink(Path.Combine(snapshot, name), Path.Combine("..", "..", "blobs", blob));
        }
        using (ModelFolder.Load(snapshot)) { }
        // ... but only into blobs/: a snapshot link to a file elsewhere in the repository folder is still outside.
        File.Copy(outsideFile, Path.Combine(repository, "notes"));
        File.CreateSymbolicLink(Path.Combine(snapshot, "tokenizer.json"), Path.Combine("..", "..", "notes"));
        Assert.Contains("outside the model folder", LoadError(snapshot));
    }

    private string LoadError(string? dir = null)
    {
        // On a worker thread with a timeout: a regression that opens a pipe fails here instead of hanging the suite.
        var load = Task.Run(() => ModelFolder.Load(dir ?? folder));
        bool finished = ((IAsyncResult)load).AsyncWaitHandle.WaitOne(TimeSpan.FromSeconds(30));
        Assert.True(finished, "the load hung (a named pipe was opened?)");
        var error = Assert.IsType<TianGongException>(load.Exception?.InnerException);
        Assert.DoesNotContain('\n', error.Message);
        Assert.DoesNotContain("SECRET", error.Message);
        return error.Message;
    }

    private void UseIndex(params string[] shards)
    {
        File.Delete(Path.Combine(folder, "model.safetensors"));
        var map = new JsonObject();
        for (int i = 0; i < shards.Length; i++) map[$"tensor{i}"] = shards[i];
        File.WriteAllText(Path.Combine(folder, CheckpointFiles.ShardIndex), new JsonObject { ["weight_map"] = map }.ToJsonString());
    }

    private void ReplaceWithLink(string name, string target)
    {
        var path = Path.Combine(folder, name);
        if (File.Exists(path) || new FileInfo(path).LinkTarget is not null) File.Delete(path);
        File.CreateSymbolicLink(path, target);
    }

    private static void MakeFifo(string path)
    {
        if (mkfifo(path, Convert.ToUInt32("600", 8)) != 0) throw new IOException($"mkfifo {path} failed");
    }

    [DllImport("libc")]
    private static extern int mkfifo(string path, uint mode);
}
