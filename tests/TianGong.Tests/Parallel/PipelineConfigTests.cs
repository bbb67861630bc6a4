using TianGong.Parallelism;

namespace TianGong.Tests.Parallel;

public class PipelineConfigTests
{
    [Fact]
    public void Pipeline_keys_parse_from_the_command_line_and_print_back()
    {
        var layout = ParallelConfig.Parse("pp=2,pp_split=3,1,schedule=gpipe,micro_batches=4,recompute=full");
        Assert.Equal((2, "gpipe", 4, "full"), (layout.Pp, layout.Schedule, layout.MicroBatches, layout.Recompute));
        Assert.Equal([3, 1], layout.PpSplit!);
        Assert.EndsWith(",micro_batches=4,schedule=gpipe,pp_split=3,1", layout.ToString());
        Assert.Equal(layout.ToString(), ParallelConfig.Parse(layout.ToString()).ToString());
        Assert.Equal("1f1b", ParallelConfig.Parse("pp=2").Schedule); // the default schedule
    }
}
