using System.Diagnostics;

namespace TianGong.Parallelism.Communication;

/// <summary>
/// Every call of <see cref="NcclCommunicator"/> once on GPU tensors, with values each rank can predict (as
/// <see cref="CollectiveCheck"/> does over MPI), then the all-reduce bus bandwidth as nccl-tests reports it. Run by
/// <c>bench/gpu.sh</c> on a machine with two or more GPUs. NOT YET RUN ON A GPU (none lent while it was written).
/// </summary>
public static class NcclCheck
{
    /// <summary>One line per call (what and how long); throws naming the first result that is wrong.</summary>
    public static IReadOnlyList<string> Run(NcclCommunicator world)
    {
        var device = world.Device;
        var lines = new List<string>();
        int r = world.Rank, n = world.Size;
        void Check(string what, Action body)
        {
            var clock = Stopwatch.StartNew();
            body();
            lines.Add($"{what,-32} ok  {clock.Elapsed.TotalMilliseconds,8:F2} ms");
        }
        void Expect(string what, Tensor actual, Tensor expected)
        {
            using var a = actual.cpu().to(ScalarType.Float64);
            using var e = expected.cpu().to(ScalarType.Float64);
            if (!a.allclose(e))
                throw new TianGongException($"NCCL check on rank {world.WorldRank}: {what} returned [{string.Join(", ", a.data<double>().Take(8))}], expected [{string.Join(", ", e.data<double>().Take(8))}]");
        }

        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
            Check($"all-reduce sum ({dtype})", () =>
            {
                using var t = (arange(4, ScalarType.Float32) + r).to(dtype).to(device);
                world.AllReduce(t);
                using var expected = arange(4, ScalarType.Float32) * n + n * (n - 1) / 2;
                Expect("all-reduce", t, expected);
            });
        Check("all-reduce max (fp64)", () =>
        {
            using var t = tensor(new double[] { r }, device: device);
            world.AllReduce(t, ReduceOp.Max);
            Expect("all-reduce max", t, tensor(new double[] { n - 1 }));
        });
        Check("broadcast from rank 0 (int64)", () =>
        {
            using var t = full(3, r == 0 ? 42L : -1L, ScalarType.Int64, device);
            world.Broadcast(t, 0);
            Expect("broadcast", t, full(3, 42L, ScalarType.Int64));
        });
        Check("all-gather", () =>
        {
            using var mine = full(2, (float)r, device: device);
            using var all = empty(2 * n, device: device);
            world.AllGather(mine, all);
            Expect("all-gather", all, arange(n, ScalarType.Float32).repeat_interleave(2));
        });
        Check("reduce-scatter", () =>
        {
            using var input = arange(2 * n, ScalarType.Float32, device); // every rank the same: the sum is n × input
            using var output = empty(2, device: device);
            world.ReduceScatter(input, output);
            Expect("reduce-scatter", output, arange(2 * r, 2 * r + 2, 1, ScalarType.Float32) * n);
        });
        Check("all-to-all (grouped send/recv)", () =>
        {
            using var input = (arange(n, ScalarType.Float32) + 100 * r).to(device); // chunk j: 100r + j, for rank j
            using var output = empty(n, device: device);
            world.AllToAll(input, output);
            Expect("all-to-all", output, arange(n, ScalarType.Float32) * 100 + r); // from rank i: 100i + r
        });
        Check("send/receive ring (async, grouped)", () =>
        {
            using var outgoing = full(4, (float)r, device: device);
            using var incoming = empty(4, device: device);
            var receive = world.ReceiveAsync(incoming, (r - 1 + n) % n, tag: 7);
            var send = world.SendAsync(outgoing, (r + 1) % n, tag: 7);
            send.Wait();
            receive.Wait();
            Expect("ring send/receive", incoming, full(4, (float)((r - 1 + n) % n)));
        });
        Check("CPU tensor through MPI", () =>
        {
            using var t = ones(2);
            world.AllReduce(t);
            Expect("CPU all-reduce", t, full(2, (float)n));
        });
        Check("split (even/odd ranks)", () =>
        {
            using var half = world.Split(r % 2, r, "even-odd");
            int expectedSize = n / 2 + (r % 2 == 0 ? n % 2 : 0);
            if (half.Size != expectedSize || half.Rank != r / 2)
                throw new TianGongException($"NCCL check on rank {world.WorldRank}: split gave rank {half.Rank} of {half.Size}, expected {r / 2} of {expectedSize}");
            using var t = ones(1, device: device);
            half.AllReduce(t);
            Expect("all-reduce in the split group", t, full(1, (float)expectedSize));
        });
        Check("barrier", world.Barrier);
        lines.Add(BusBandwidth(world, 256L << 20, ScalarType.BFloat16));
        return lines;
    }

    /// <summary>
    /// Best of 5 in-place all-reduces of <paramref name="bytes"/>: algorithm bandwidth (bytes / time) and bus bandwidth
    /// (× 2(n-1)/n, nccl-tests' figure that compares with the link's speed whatever the number of ranks).
    /// </summary>
    public static string BusBandwidth(NcclCommunicator world, long bytes, ScalarType dtype)
    {
        using var probe = empty(0, dtype);
        using var t = ones(bytes / probe.element_size(), dtype, world.Device);
        world.AllReduce(t); // warm-up: NCCL sets up its channels on the first call
        double best = double.MaxValue;
        for (int i = 0; i < 5; i++)
        {
            var clock = Stopwatch.StartNew();
            world.AllReduce(t);
            best = Math.Min(best, clock.Elapsed.TotalSeconds);
        }
        double algorithm = bytes / best / 1e9;
        double bus = algorithm * 2 * (world.Size - 1) / world.Size;
        return $"all-reduce {bytes >> 20} MiB {dtype}: {best * 1e3:F2} ms, algorithm bandwidth {algorithm:F1} GB/s, bus bandwidth {bus:F1} GB/s";
    }
}
