using TianGong.Checkpoints;
using TianGong.Models;
using TianGong.Models.Layers;
using TianGong.Tests.Training;
using TorchSharp.Modules;

namespace TianGong.Tests.Models;

/// <summary>EmbeddingTable against nn.Embedding: the table a seed draws, the rows picked, the gradient, and what a meta build leaves.</summary>
[Collection(nameof(GlobalRandomState))] // seeds the global generator and compares two draws
public class EmbeddingTableTests
{
    [Fact]
    public void A_seed_draws_the_table_nn_Embedding_draws()
    {
        manual_seed(7);
        using var ours = new EmbeddingTable(50, 12);
        manual_seed(7);
        using var theirs = nn.Embedding(50, 12);
        Assert.Equal(new long[] { 50, 12 }, ours.weight.shape);
        Assert.True(ours.weight.equal(theirs.weight!).all().item<bool>());
        Assert.Equal(["weight"], ours.named_parameters().Select(p => p.name));
    }

    [Fact]
    public void Rows_and_gradients_equal_nn_Embedding()
    {
        manual_seed(3);
        using var ours = new EmbeddingTable(20, 8);
        using var theirs = nn.Embedding(20, 8);
        using (no_grad()) theirs.weight!.copy_(ours.weight);
        using var indices = tensor(new long[] { 3, 7, 3, 0, 19, 3, 7, 1 }, [2, 4]);    // repeats: gradients add up
        using var upstream = randn(2, 4, 8);
        using var a = ours.forward(indices);
        using var b = theirs.forward(indices);
        Assert.Equal(new long[] { 2, 4, 8 }, a.shape);
        Assert.True(a.equal(b).all().item<bool>());
        (a * upstream).sum().backward();
        (b * upstream).sum().backward();
        Assert.True(ours.weight.grad!.equal(theirs.weight!.grad!).all().item<bool>());
    }

    [Fact]
    public void Setting_the_weight_registers_the_new_table_under_the_same_key()
    {
        using var table = new EmbeddingTable(4, 3);
        using var replacement = new Parameter(ones(2, 3));
        table.weight = replacement;
        var (name, parameter) = Assert.Single(table.named_parameters());
        Assert.Equal("weight", name);
        Assert.Same(replacement, parameter);
        using var row = table.forward(tensor(new long[] { 1 }));
        Assert.Equal([1f, 1f, 1f], row.data<float>().ToArray());
    }

    [Fact]
    public void A_model_built_on_meta_holds_its_tables_on_meta_and_loads_them_from_the_checkpoint()
    {
        var dir = Path.Combine(Path.GetTempPath(), "tiangong-tests", "embedding-meta-" + Guid.NewGuid().ToString("N"));
        try
        {
            using var saved = TestModels.Create("gpt2");
            ModelFolder.Save(dir, saved, saved.Config, tokenizer: null);
            using var built = MetaModel.TryBuild(() => ModelConfigs.CreateModel(saved.Config));
            Assert.NotNull(built);
            Assert.All(built!.named_parameters(), p => Assert.Equal(DeviceType.META, p.parameter.device_type));
            using var loaded = ModelFolder.Load(dir, dtype: null, buildOnMeta: true);
            var expected = saved.state_dict();
            foreach (var (name, value) in loaded.Module.state_dict())
                Assert.True(value.equal(expected[name]).all().item<bool>(), name);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }
}
