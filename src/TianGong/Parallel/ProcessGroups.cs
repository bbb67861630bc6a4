using System.Text;
using TianGong.Parallelism.Communication;

namespace TianGong.Parallelism;

/// <summary>
/// Where a rank sits in the (tp, dp, pp) grid, laid out as Megatron-Core's parallel_state does (its default order
/// "tp-cp-ep-dp-pp" without context and expert parallelism): tensor-parallel ranks are adjacent (fastest varying, so a
/// tensor-parallel group stays inside a node), then data-parallel, then pipeline stages (slowest):
/// world rank = tp_rank + tp × (dp_rank + dp × pp_rank).
/// </summary>
public sealed record GridPosition(int TpRank, int DpRank, int PpRank)
{
    public static GridPosition Of(int worldRank, ParallelConfig layout) =>
        new(worldRank % layout.Tp, worldRank / layout.Tp % layout.Dp, worldRank / (layout.Tp * layout.Dp));

    public static int WorldRank(int tpRank, int dpRank, int ppRank, ParallelConfig layout) =>
        tpRank + layout.Tp * (dpRank + layout.Dp * ppRank);
}

/// <summary>
/// The communicators of one rank: the whole job, and the groups of each dimension, made from (dp, tp, pp) with one
/// split per dimension. Passed to the parts that need them as an object, never kept in statics.
/// </summary>
public sealed class ProcessGroups : IDisposable
{
    private ProcessGroups(ParallelConfig layout, ICommunicator world, ICommunicator dataParallel, ICommunicator tensorParallel, ICommunicator pipeline)
    {
        Layout = layout;
        World = world;
        DataParallel = dataParallel;
        TensorParallel = tensorParallel;
        Pipeline = pipeline;
        Position = GridPosition.Of(world.Rank, layout);
    }

    public ParallelConfig Layout { get; }
    public ICommunicator World { get; }
    public ICommunicator DataParallel { get; }
    public ICommunicator TensorParallel { get; }
    public ICommunicator Pipeline { get; }
    public GridPosition Position { get; }

    /// <summary>Splits <paramref name="world"/> into the groups of <paramref name="layout"/>; every rank must call it.</summary>
    public static ProcessGroups Create(ICommunicator world, ParallelConfig layout)
    {
        if (world.Size != layout.WorldSize)
            throw new TianGongException($"--parallel {layout}: needs dp × tp × pp = {layout.WorldSize} processes, but the job has {world.Size} " +
                                        $"(run it with tiangong launch -n {layout.WorldSize})");
        var p = GridPosition.Of(world.Rank, layout);
        // Color: the coordinates the group shares; key: the coordinate that varies inside it.
        var tensor = world.Split(p.DpRank + layout.Dp * p.PpRank, p.TpRank, "tensor-parallel");
        var data = world.Split(p.TpRank + layout.Tp * p.PpRank, p.DpRank, "data-parallel");
        var pipeline = world.Split(p.TpRank + layout.Tp * p.DpRank, p.PpRank, "pipeline");
        return new ProcessGroups(layout, world, data, tensor, pipeline);
    }

    /// <summary>The world ranks of every group of each dimension, as printed once at the start of a job.</summary>
    public static string Describe(ParallelConfig layout)
    {
        var text = new StringBuilder($"parallel layout {layout} on {layout.WorldSize} ranks (world rank = tp_rank + tp·(dp_rank + dp·pp_rank))\n");
        void Groups(string name, IEnumerable<IEnumerable<int>> groups) =>
            text.Append($"  {name,-16} ").AppendJoin(" ", groups.Select(g => "[" + string.Join(",", g) + "]")).Append('\n');
        Groups("tensor-parallel", from pp in Enumerable.Range(0, layout.Pp) from dp in Enumerable.Range(0, layout.Dp)
                                  select Enumerable.Range(0, layout.Tp).Select(tp => GridPosition.WorldRank(tp, dp, pp, layout)));
        Groups("data-parallel", from pp in Enumerable.Range(0, layout.Pp) from tp in Enumerable.Range(0, layout.Tp)
                                select Enumerable.Range(0, layout.Dp).Select(dp => GridPosition.WorldRank(tp, dp, pp, layout)));
        Groups("pipeline", from dp in Enumerable.Range(0, layout.Dp) from tp in Enumerable.Range(0, layout.Tp)
                           select Enumerable.Range(0, layout.Pp).Select(pp => GridPosition.WorldRank(tp, dp, pp, layout)));
        return text.ToString().TrimEnd();
    }

    public void Dispose()
    {
        Pipeline.Dispose();
        DataParallel.Dispose();
        TensorParallel.Dispose();
        World.Dispose();
    }
}
