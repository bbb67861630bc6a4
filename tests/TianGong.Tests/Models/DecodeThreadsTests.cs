using System.Runtime.Intrinsics.X86;
using TianGong.Models.Layers;

namespace TianGong.Tests.Models;

public class DecodeThreadsTests
{
    private static DecodeThreads NewTeam() => new(TimeSpan.FromMicroseconds(20));

    [Fact]
    public void Every_share_runs_once_and_share_zero_on_the_calling_thread()
    {
        var team = NewTeam();
        int caller = Environment.CurrentManagedThreadId;
        for (int round = 0; round < 200; round++)
        {
            int count = 1 + round % 5;
            var runs = new int[count];
            var threads = new int[count];
            team.Run(count, i =>
            {
                Interlocked.Increment(ref runs[i]);
                threads[i] = Environment.CurrentManagedThreadId;
            });
            Assert.All(runs, r => Assert.Equal(1, r));
            Assert.Equal(caller, threads[0]);
        }
        Assert.True(team.Workers <= Math.Max(0, Environment.ProcessorCount - 1), $"{team.Workers} workers on {Environment.ProcessorCount} cores");
    }

    [Fact]
    public void Shares_run_after_the_workers_fell_asleep()
    {
        var team = NewTeam();
        for (int round = 0; round < 5; round++)
        {
            Thread.Sleep(5); // far past the 20 µs spin: the workers block, and the next region must wake them
            int sum = 0;
            team.Run(4, i => Interlocked.Add(ref sum, i + 1));
            Assert.Equal(10, sum);
        }
    }

    [Fact]
    public void An_exception_in_a_share_reaches_the_caller_after_the_other_shares_and_the_team_still_works()
    {
        var team = NewTeam();
        foreach (int failing in new[] { 0, 1, 2 })
        {
            var runs = new int[3];
            var error = Assert.Throws<InvalidOperationException>(() => team.Run(3, i =>
            {
                Interlocked.Increment(ref runs[i]);
                if (i == failing) throw new InvalidOperationException($"share {i} failed");
            }));
            Assert.Equal($"share {failing} failed", error.Message);
            Assert.All(runs, r => Assert.Equal(1, r));
        }
        int sum = 0;
        team.Run(2, i => Interlocked.Add(ref sum, i + 1));
        Assert.Equal(3, sum);
    }

    [Fact]
    public void Concurrent_and_nested_callers_each_get_all_their_shares_run()
    {
        var team = NewTeam();
        var callers = Enumerable.Range(0, 4).Select(c => Task.Run(() =>
        {
            for (int round = 0; round < 300; round++)
            {
                int count = 2 + (round + c) % 3;
                var runs = new int[count];
                int nested = 0;
                team.Run(count, i =>
                {
                    Interlocked.Increment(ref runs[i]);
                    if (i == count - 1) team.Run(2, j => Interlocked.Increment(ref nested)); // a region inside a region
                });
                if (runs.Any(r => r != 1) || nested != 2)
                    throw new InvalidOperationException($"caller {c} round {round}: shares ran {string.Join(",", runs)} times, nested {nested}");
            }
        })).ToArray();
        Assert.True(Task.WaitAll(callers, TimeSpan.FromSeconds(60)), "the callers did not finish within a minute");
    }

    [Fact]
    public void A_product_on_the_team_equals_the_same_product_run_inline()
    {
        if (!(Avx512F.IsSupported || (Avx2.IsSupported && Fma.IsSupported))) return;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        manual_seed(3);
        // 16 × 512 × 2048 multiply-adds: above the kernel's threshold for a second share.
        var x = randn(16, 512);
        var w = randn(512, 2048) / Math.Sqrt(512);
        var b = randn(2048);
        var onTeam = DecodeMatmul.TryInOut(x, w, b)!;
        var headOnTeam = DecodeMatmul.TryOutIn(x, w.t().contiguous(), null)!;
        Tensor? inline = null, headInline = null;
        // Inside a region of the shared team (held by this test's share 0) the kernel finds it busy and runs its shares inline.
        DecodeThreads.Shared.Run(2, i =>
        {
            if (i != 0) return;
            inline = DecodeMatmul.TryInOut(x, w, b);
            headInline = DecodeMatmul.TryOutIn(x, w.t().contiguous(), null);
        });
        Assert.True(onTeam.eq(inline!).all().item<bool>());
        Assert.True(headOnTeam.eq(headInline!).all().item<bool>());
    }
}
