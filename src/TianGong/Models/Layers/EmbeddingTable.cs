using TorchSharp.Modules;
using TorchSharp.Utils;

namespace TianGong.Models.Layers;

/// <summary>
/// A lookup table of vectors, as nn.Embedding without its options: key "weight" (count, dim), drawn from N(0, 1) as
/// libtorch's Embedding draws it (the same seed gives the same table), rows picked by index_select (the same values,
/// and the same gradient, an index_add of the output's rows).
/// Why not nn.Embedding: its native constructor allocates the table in CPU memory and fills it with random numbers even
/// when the model is built on the meta device to be loaded from a checkpoint (a 50257×1280 GPT-2 table: 257 MB and a
/// fifth of a second at every load; Qwen2's 151936-token vocabulary twice that), and the table then stays allocated until
/// the GC finalizes a handle. Built here, a meta-built model allocates nothing.
/// </summary>
public sealed class EmbeddingTable : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "weight")] // the key moves (to(), to(dtype)) re-register it under: TorchSharp names fields by this
    private Parameter table;

    public EmbeddingTable(long count, long dim) : base(nameof(EmbeddingTable))
    {
        table = new Parameter(empty(count, dim));
        using (no_grad()) table.normal_();
        ConditionallyRegisterParameter("weight", table);
    }

    /// <summary>The (count, dim) table; setting it registers the new parameter under the same key.</summary>
    public Parameter weight
    {
        get => table;
        set
        {
            table = value;
            ConditionallyRegisterParameter("weight", value);
        }
    }

    /// <summary>Indices of any shape → their rows, shape (…, dim).</summary>
    public override Tensor forward(Tensor indices)
    {
        var shape = indices.shape.Append(table.shape[1]).ToArray();
        using var flat = indices.reshape(-1);
        using var rows = table.index_select(0, flat);
        return rows.view(shape);
    }
}
