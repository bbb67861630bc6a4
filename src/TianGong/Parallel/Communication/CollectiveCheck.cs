using System.Diagnostics;

namespace TianGong.Parallelism.Communication;

/// <summary>
/// Runs every call of <see cref="ICommunicator"/> once with values each rank can predict and compares the result
/// (<c>tiangong launch -n N --check</c> over MPI, and <c>bench/gpu.sh</c>'s NCCL check on GPUs, like nccl-tests for a new
/// cluster): a broken install, a wrong datatype or a firewall between hosts shows up as one line naming the call, before
/// a training job waits on it.
/// </summary>
/// <remarks>
/// On a GPU (<see cref="NcclCommunicator"/>) the tensors live on the rank's device, bf16 is checked too (MPI has no bf16
/// type, so the CPU path leaves it out), and one CPU tensor checks that host tensors still go through MPI. The NCCL path
/// has NOT YET RUN ON A GPU (none was lent while it was written).
/// </remarks>
public static class CollectiveCheck
{
    /// <summary>Checks all calls on <paramref name="world"/> with tensors on <paramref name="device"/> (the CPU when null); returns one line per call (what and how long); throws naming the first that is wrong.</summary>
    public static IReadOnlyList<string> Run(ICommunicator world, Device? device = null)
    {
        device ??= CPU;
        bool onGpu = device.type != DeviceType.CPU;
        string engine = onGpu ? "NCCL" : "collective";
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
                throw new TianGongException($"{engine} check on rank {world.WorldRank}: {what} returned [{string.Join(", ", a.data<double>().Take(8))}], expected [{string.Join(", ", e.data<double>().Take(8))}]");
        }

        foreach (var dtype in onGpu ? new[] { ScalarType.Float32, ScalarType.BFloat16 } : [ScalarType.Float32])
            Check($"all-reduce sum ({Name(dtype)})", () =>
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
            using var expected = tensor(new double[] { n - 1 });
            Expect("all-reduce max", t, expected);
        });
        Check("broadcast from rank 0 (int64)", () =>
        {
            using var t = full(3, r == 0 ? 42L : -1L, ScalarType.Int64, device);
            world.Broadcast(t, 0);
            using var expected = full(3, 42L, ScalarType.Int64);
            Expect("broadcast", t, expected);
        });
        Check("all-gather", () =>
        {
            using var mine = full(2, (float)r, device: device);
            using var all = empty(2 * n, device: device);
            world.AllGather(mine, all);
            using var expected = arange(n, ScalarType.Float32).repeat_interleave(2);
            Expect("all-gather", all, expected);
        });
        Check("reduce-scatter", () =>
        {
            using var input = arange(2 * n, ScalarType.Float32, device); // every rank the same: the sum is n × input
            using var output = empty(2, device: device);
            world.ReduceScatter(input, output);
            using var expected = arange(2 * r, 2 * r + 2, 1, ScalarType.Float32) * n;
            Expect("reduce-scatter", output, expected);
        });
        Check("all-to-all", () =>
        {
            using var input = (arange(n, ScalarType.Float32) + 100 * r).to(device); // chunk j: 100r + j, for rank j
            using var output = empty(n, device: device);
            world.AllToAll(input, output);
            using var expected = arange(n, ScalarType.Float32) * 100 + r; // from rank i: 100i + r
            Expect("all-to-all", output, expected);
        });
        Check("send/receive ring (async)", () =>
        {
            using var outgoing = full(4, (float)r, device: device);
            using var incoming = empty(4, device: device);
            var receive = world.ReceiveAsync(incoming, (r - 1 + n) % n, tag: 7);
            var send = world.SendAsync(outgoing, (r + 1) % n, tag: 7);
            send.Wait();
            receive.Wait();
            using var expected = full(4, (float)((r - 1 + n) % n));
            Expect("ring send/receive", incoming, expected);
        });
        if (onGpu)
            Check("CPU tensor through MPI", () =>
            {
                using var t = ones(2);
                world.AllReduce(t);
                using var expected = full(2, (float)n);
                Expect("CPU all-reduce", t, expected);
            });
        Check("split (even/odd ranks)", () =>
        {
            using var half = world.Split(r % 2, r, "even-odd");
            int expectedSize = n / 2 + (r % 2 == 0 ? n % 2 : 0);
            if (half.Size != expectedSize || half.Rank != r / 2)
                throw new TianGongException($"{engine} check on rank {world.WorldRank}: split gave rank {half.Rank} of {half.Size}, expected {r / 2} of {expectedSize}");
            using var t = ones(1, device: device);
            half.AllReduce(t);
            using var expected = full(1, (float)expectedSize);
            Expect("all-reduce in the split group", t, expected);
        });
        Check("barrier", world.Barrier);
        return lines;
    }

    /// <summary>
    /// Best of 5 in-place all-reduces of <paramref name="bytes"/> on <paramref name="device"/>: algorithm bandwidth
    /// (bytes / time) and bus bandwidth (× 2(n-1)/n, nccl-tests' figure that compares with the link's speed whatever the
    /// number of ranks).
    /// </summary>
    public static string BusBandwidth(ICommunicator world, Device device, long bytes, ScalarType dtype)
    {
        using var probe = empty(0, dtype);
        using var t = ones(bytes / probe.element_size(), dtype, device);
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
        return $"all-reduce {bytes >> 20} MiB {Name(dtype)}: {best * 1e3:F2} ms, algorithm bandwidth {algorithm:F1} GB/s, bus bandwidth {bus:F1} GB/s";
    }

    private static string Name(ScalarType dtype) => dtype switch
    {
        ScalarType.Float32 => "fp32",
        ScalarType.BFloat16 => "bf16",
        _ => dtype.ToString(),
    };
}
