using TianGong.Models.Layers;

namespace TianGong.Tuning;

/// <summary>
/// A linear layer that serves several LoRA adapters in one batch, as Punica / S-LoRA and vLLM's LoRA layers do: the base
/// projection runs once for every row, then each group of rows that shares an adapter gets that adapter's update
/// (x Aᵀ) Bᵀ · scaling added to its own rows only; rows of the base model get none. Which row belongs to which adapter is
/// read from the <see cref="MultiLoraAdapters"/> the engine routes before each forward pass, never stored here.
/// The base weight keeps its key (<c>q_proj.weight</c>); the adapters' tensors are held for inference and are not part of
/// the state dict, so the base model still saves and loads as before.
/// </summary>
public sealed class MultiLoraLinear : LinearWrapper
{
    private readonly MultiLoraAdapters routing;
    private readonly string moduleName; // for errors: the layer's name in the model

    // Per adapter index: Aᵀ (in, r) and scaling · Bᵀ (r, out), transposed once so a step does two plain matmuls;
    // null where that adapter leaves this layer alone.
    private readonly (Tensor AT, Tensor ScaledBT)?[] updates;

    // The stacked layout (routing.Stacked): every adapter's Aᵀ side by side (in, ΣR) and scaling · Bᵀ one above the
    // other (ΣR, out), zeros for an adapter that leaves this layer alone, so its columns add exactly nothing. A tuple, as
    // updates is, so that RegisterComponents does not make buffers (state-dict keys) of them.
    private readonly (Tensor AT, Tensor ScaledBT)? stacked;

    internal MultiLoraLinear(string name, LinearParts original, MultiLoraAdapters routing, (Tensor A, Tensor B, double Scaling)?[] adapters)
        : base(nameof(MultiLoraLinear), original)
    {
        moduleName = name;
        this.routing = routing;
        updates = new (Tensor, Tensor)?[adapters.Length];
        using (no_grad())
            for (int i = 0; i < adapters.Length; i++)
                if (adapters[i] is { } adapter)
                    updates[i] = (adapter.A.t().contiguous().DetachFromDisposeScope(),
                        (adapter.B * adapter.Scaling).t().contiguous().DetachFromDisposeScope());
        if (routing.Stacked)
            using (no_grad())
            {
                var like = original.Weight;
                var stackedAT = zeros([original.InFeatures, routing.TotalRank], like.dtype, like.device).DetachFromDisposeScope();
                var stackedScaledBT = zeros([routing.TotalRank, original.OutFeatures], like.dtype, like.device).DetachFromDisposeScope();
                for (int i = 0; i < adapters.Length; i++)
                    if (updates[i] is { } update)
                    {
                        using var columns = stackedAT.narrow(1, routing.RankOffsets[i], routing.Ranks[i]);
                        using var rows = stackedScaledBT.narrow(0, routing.RankOffsets[i], routing.Ranks[i]);
                        columns.copy_(update.AT);
                        rows.copy_(update.ScaledBT);
                    }
                stacked = (stackedAT, stackedScaledBT);
            }
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        var groups = routing.Groups;
        if (groups.Count == 0) return BaseForward(x);
        // The row groups index dim 0: a layer that sees tokens flattened across rows (an MoE expert) cannot be routed.
        if (x.shape[0] != routing.RowCount)
            throw new TianGongException($"{moduleName}: got {x.shape[0]} rows but the batch has {routing.RowCount}; multi-adapter serving needs layers that see the batch dimension first");
        using var scope = NewDisposeScope();
        var y = BaseForward(x);                                                                      // (B, T, out)
        if (routing.Mask is { } mask && stacked is { } all)
        {
            y.add_(x.matmul(all.AT).mul_(mask).matmul(all.ScaledBT));                               // (B, T, ΣR) → (B, T, out)
            return y.MoveToOuterDisposeScope();
        }
        foreach (var group in groups)
        {
            if (updates[group.Adapter] is not { } update) continue;
            var (at, scaledBT) = update;
            if (group.Rows is null) y.add_(x.matmul(at).matmul(scaledBT));                          // every row: no gather
            else y.index_add_(0, group.Rows, x.index_select(0, group.Rows).matmul(at).matmul(scaledBT), 1); // (m, T, r) → (m, T, out)
        }
        return y.MoveToOuterDisposeScope();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            foreach (var update in updates)
                if (update is { } u)
                {
                    u.AT.Dispose();
                    u.ScaledBT.Dispose();
                }
            stacked?.AT.Dispose();
            stacked?.ScaledBT.Dispose();
        }
        base.Dispose(disposing);
    }
}
