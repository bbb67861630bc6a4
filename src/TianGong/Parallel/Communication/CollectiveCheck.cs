using System.Diagnostics;

namespace TianGong.Parallelism.Communication;

/// <summary>
/// Runs every call of <see cref="ICommunicator"/> once with values each rank can predict and compares the result
/// (<c>tiangong launch -n N --check</c>, like nccl-tests for a new cluster): a broken install, a wrong datatype or a
/// firewall between hosts shows up as one line naming the call, before a training job waits on it.
/// </summary>
public static class CollectiveCheck
{
    /// <summary>Checks all calls on <paramref name="world"/>; returns one line per call (what and how long); throws naming the first that is wrong.</summary>
    public static IReadOnlyList<string> Run(ICommunicator world)
    {
        var lines = new List<string>();
        int r = world.Rank, n = world.Size;
        void Check(string what, Action body)
        {
            var clock = Stopwatch.StartNew();
            body();
            lines.Add($"{what,-28} ok  {clock.Elapsed.TotalMilliseconds,8:F2} ms");
        }
        void Expect(string what, Tensor actual, Tensor expected)
        {
            if (!allclose(actual, expected))
                throw new TianGongException($"collective check on rank {world.WorldRank}: {what} returned [{string.Join(", ", actual.data<float>().Take(8))}], expected [{string.Join(", ", expected.data<float>().Take(8))}]");
        }

        Check("all-reduce sum (fp32)", () =>
        {
            using var t = arange(4, ScalarType.Float32) + r;
            world.AllReduce(t);
            using var expected = arange(4, ScalarType.Float32) * n + n * (n - 1) / 2;
            Expect("all-reduce", t, expected);
        });
        Check("all-reduce max (fp64)", () =>
        {
            using var t = tensor(new double[] { r });
            world.AllReduce(t, ReduceOp.Max);
            if (t.item<double>() != n - 1) throw new TianGongException($"collective check on rank {world.WorldRank}: all-reduce max gave {t.item<double>()}, expected {n - 1}");
        });
        Check("broadcast from rank 0 (int64)", () =>
        {
            using var t = full(3, r == 0 ? 42L : -1L, ScalarType.Int64);
            world.Broadcast(t, 0);
            if (t.data<long>().Any(v => v != 42)) throw new TianGongException($"collective check on rank {world.WorldRank}: broadcast gave [{string.Join(", ", t.data<long>())}], expected 42s");
        });
        Check("all-gather", () =>
        {
            using var mine = full(2, (float)r);
            using var all = empty(2 * n);
            world.AllGather(mine, all);
            using var expected = arange(n, ScalarType.Float32).repeat_interleave(2);
            Expect("all-gather", all, expected);
        });
        Check("reduce-scatter", () =>
        {
            using var input = arange(2 * n, ScalarType.Float32); // every rank the same: the sum is n × input
            using var output = empty(2);
            world.ReduceScatter(input, output);
            using var expected = arange(2 * r, 2 * r + 2, 1, ScalarType.Float32) * n;
            Expect("reduce-scatter", output, expected);
        });
        Check("all-to-all", () =>
        {
            using var input = arange(n, ScalarType.Float32) + 100 * r; // chunk j: 100r + j, for rank j
            using var output = empty(n);
            world.AllToAll(input, output);
            using var expected = arange(n, ScalarType.Float32) * 100 + r; // from rank i: 100i + r
            Expect("all-to-all", output, expected);
        });
        Check("send/receive ring (async)", () =>
        {
            using var outgoing = full(4, (float)r);
            using var incoming = empty(4);
            var receive = world.ReceiveAsync(incoming, (r - 1 + n) % n, tag: 7);
            var send = world.SendAsync(outgoing, (r + 1) % n, tag: 7);
            send.Wait();
            receive.Wait();
            using var expected = full(4, (float)((r - 1 + n) % n));
            Expect("ring send/receive", incoming, expected);
        });
        Check("split (even/odd ranks)", () =>
        {
            using var half = world.Split(r % 2, r);
            int expectedSize = n / 2 + (r % 2 == 0 ? n % 2 : 0);
            if (half.Size != expectedSize || half.Rank != r / 2)
                throw new TianGongException($"collective check on rank {world.WorldRank}: split gave rank {half.Rank} of {half.Size}, expected {r / 2} of {expectedSize}");
            using var t = ones(1);
            half.AllReduce(t);
            if (t.item<float>() != expectedSize) throw new TianGongException($"collective check on rank {world.WorldRank}: all-reduce in the split group gave {t.item<float>()}, expected {expectedSize}");
        });
        Check("barrier", world.Barrier);
        return lines;
    }
}
