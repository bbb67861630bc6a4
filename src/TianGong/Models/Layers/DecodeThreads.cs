using System.Diagnostics;
using System.Runtime.ExceptionServices;

namespace TianGong.Models.Layers;

/// <summary>
/// The threads that run the shares of the CPU decode kernels' parallel regions (<see cref="DecodeMatmul"/>,
/// <see cref="DecodeAttention"/>, the quantized GEMV, the sampler's rows): a decode step of a small model enters about
/// thirty such regions of 20–600 µs each. With <c>Parallel.For</c> every region allocated its loop state, queued a task on
/// the .NET thread pool (beside Kestrel's work when serving) and waited for a pool thread to pick it up; here a few
/// persistent background threads wait for the next region, the calling thread runs share 0, and any share nobody has
/// started yet when a thread runs out of work is taken by that thread (so a worker that is late, asleep or on a core
/// another process holds costs its share, not a wait).
/// <para>
/// A waiting thread spins for <see cref="Spin"/>, yielding its core at every turn after the first few, then blocks on
/// an event: a core another process needs is handed over at each turn, and an idle process stops spinning after 100 µs.
/// 100 µs because about 90 % of the gaps between two regions of a decode step are shorter (at 50 µs a quarter were
/// longer) and waking a blocked thread took ~20 µs on the measured VM. Measured against Parallel.For in
/// docs/benchmarks.md, "Decode threads": about even on a quiet machine, decode steps ~1.5× faster (1.0–1.9×) with
/// another process busy on one of the two cores. Hand-written because .NET offers no pool with a bounded spin and
/// caller-runs-first scheduling (the thread pool and TPL are general-purpose task queues).
/// </para>
/// <para>
/// One region at a time: a caller that finds the team busy (another engine's step on another thread, a test class
/// running beside another, a share that itself starts a region) runs all its shares on its own thread, in order. Every
/// share computes the same thing whichever thread runs it, so results do not depend on the path. An exception a share
/// throws reaches the caller as it is (on the team: the first one, once every share has finished).
/// </para>
/// </summary>
internal sealed class DecodeThreads
{
    // Process-wide, like libtorch's own OpenMP pool: the cores are the process's, and a team per model or engine would
    // put two sets of spinning threads on the same cores. Created at the first parallel region; its threads are
    // background threads, so they never keep a process alive.
    private static readonly Lazy<DecodeThreads> shared = new(() => new DecodeThreads(TimeSpan.FromMicroseconds(100)));

    /// <summary>The team the decode kernels use.</summary>
    public static DecodeThreads Shared => shared.Value;

    private readonly long spinTicks;
    private readonly int maxWorkers = Math.Max(0, Environment.ProcessorCount - 1); // more would only take turns on the cores
    private readonly List<Worker> workers = [];
    private readonly ManualResetEventSlim finished = new(false, 0);  // the caller's bed while the last shares run elsewhere
    private int busy;                                              // 1 while a region runs
    private int callerSleeping;                                    // 1 while the caller waits on `finished`
    private Job? current;

    internal DecodeThreads(TimeSpan spin)
    {
        Spin = spin;
        spinTicks = (long)(spin.TotalSeconds * Stopwatch.Frequency);
    }

    /// <summary>How long a waiting thread spins before it blocks.</summary>
    public TimeSpan Spin { get; }

    /// <summary>
    /// The regions run through Parallel.For, as before the team: bench decode-threads flips it for its side-by-side runs,
    /// and TIANGONG_DECODE_THREADS=pool sets it for a whole process (read once; the README's "CPU speed: the knobs").
    /// </summary>
    internal bool UsesThreadPool { get; set; } = Environment.GetEnvironmentVariable("TIANGONG_DECODE_THREADS") == "pool";

    /// <summary>
    /// Worker threads started so far: grown on demand to the shares a region asks for less one (the kernels ask for
    /// torch.get_num_threads() shares), at most one per core besides the caller's.
    /// </summary>
    public int Workers => workers.Count;

    /// <summary>
    /// Runs <paramref name="share"/>(0) … <paramref name="share"/>(<paramref name="count"/> − 1), share 0 on the calling
    /// thread, the others on the team's threads (or this one, when it gets to them first), and returns when all are done.
    /// </summary>
    public void Run(int count, Action<int> share)
    {
        if (UsesThreadPool && count > 1)
        {
            Parallel.For(0, count, new ParallelOptions { MaxDegreeOfParallelism = count }, share);
            return;
        }
        if (count <= 1 || maxWorkers == 0 || Interlocked.CompareExchange(ref busy, 1, 0) != 0)
        {
            for (int i = 0; i < count; i++) share(i);
            return;
        }
        var job = new Job(share, count);
        try
        {
            int helpers = Math.Min(count - 1, maxWorkers);
            while (workers.Count < helpers) workers.Add(new Worker(this, workers.Count));
            Volatile.Write(ref current, job);
            for (int i = 0; i < helpers; i++) workers[i].Post();
            RunShare(job, 0);
            RunShares(job);
            AwaitFinished(job);
            Volatile.Write(ref current, null); // the delegate and what it captures are not kept until the next region
        }
        finally
        {
            Volatile.Write(ref busy, 0);
        }
        if (job.Error is { } error) ExceptionDispatchInfo.Throw(error);
    }

    /// <summary>Claims and runs the job's shares not started yet (1 and up: share 0 is the caller's).</summary>
    private void RunShares(Job job)
    {
        int i;
        while ((i = Interlocked.Increment(ref job.Next)) < job.Count) RunShare(job, i);
    }

    /// <summary>Runs one share; the thread that finishes the last one wakes the caller if it sleeps.</summary>
    private void RunShare(Job job, int i)
    {
        try { job.Share(i); }
        catch (Exception e) { Interlocked.CompareExchange(ref job.Error, e, null); }
        if (Interlocked.Decrement(ref job.Unfinished) == 0 && Interlocked.Exchange(ref callerSleeping, 0) == 1)
            finished.Set();
    }

    private void AwaitFinished(Job job)
    {
        long until = Stopwatch.GetTimestamp() + spinTicks;
        var spinner = new SpinWait();
        while (Volatile.Read(ref job.Unfinished) != 0)
        {
            if (Stopwatch.GetTimestamp() < until) { Pause(ref spinner); continue; }
            // Reset, announce, look again: a worker that finishes after the look sees the announcement and sets the event.
            finished.Reset();
            Interlocked.Exchange(ref callerSleeping, 1);
            if (Volatile.Read(ref job.Unfinished) != 0) finished.Wait();
            Volatile.Write(ref callerSleeping, 0);
        }
    }

    /// <summary>
    /// One turn of a wait's spin: a few pause instructions, growing, then (after about ten turns) a sched_yield, so a
    /// spinning thread that shares its core with the caller or another process lets it run; never a sleep.
    /// </summary>
    private static void Pause(ref SpinWait spinner) => spinner.SpinOnce(sleep1Threshold: -1);

    /// <summary>One region: its shares, the next one to claim, how many are not finished, the first error.</summary>
    private sealed class Job(Action<int> share, int count)
    {
        public readonly Action<int> Share = share;
        public readonly int Count = count;
        public int Next;              // the last share claimed: 0, the caller's, is never claimed
        public int Unfinished = count;
        public Exception? Error;
    }

    private sealed class Worker
    {
        private readonly DecodeThreads team;
        private readonly ManualResetEventSlim wake = new(false, 0);
        private int posted;   // regions posted to this worker
        private int sleeping; // 1 while it waits on `wake`

        public Worker(DecodeThreads team, int index)
        {
            this.team = team;
            new Thread(Work) { IsBackground = true, Name = $"tiangong-decode-{index + 1}" }.Start();
        }

        public void Post()
        {
            Interlocked.Increment(ref posted);
            if (Interlocked.Exchange(ref sleeping, 0) == 1) wake.Set();
        }

        private void Work()
        {
            int seen = 0;
            while (true)
            {
                seen = AwaitPost(seen);
                // A worker that wakes late may find a later region, or none: it claims what is left of whatever is current.
                if (Volatile.Read(ref team.current) is { } job) team.RunShares(job);
            }
        }

        private int AwaitPost(int seen)
        {
            long until = Stopwatch.GetTimestamp() + team.spinTicks;
            var spinner = new SpinWait();
            while (true)
            {
                int now = Volatile.Read(ref posted);
                if (now != seen) return now;
                if (Stopwatch.GetTimestamp() < until) { Pause(ref spinner); continue; }
                // Reset, announce, look again: a Post after the look sees the announcement and sets the event. A stale
                // Set (from a post this worker saw while announcing) only wakes it once more to look again.
                wake.Reset();
                Interlocked.Exchange(ref sleeping, 1);
                if (Volatile.Read(ref posted) == seen) wake.Wait();
                Volatile.Write(ref sleeping, 0);
            }
        }
    }
}
