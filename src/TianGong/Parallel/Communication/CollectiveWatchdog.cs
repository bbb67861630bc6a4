namespace TianGong.Parallelism.Communication;

/// <summary>
/// Ends the job when a blocking MPI call does not return in time. An MPI collective waits forever for a rank that
/// hangs (a rank that dies is noticed by mpirun, which ends the job): this thread watches the call in flight and,
/// past the timeout, prints which rank waited on what and calls MPI_Abort, so the launcher exits non-zero and the
/// last complete checkpoint stays as it was.
/// </summary>
internal sealed class CollectiveWatchdog(TimeSpan timeout, MpiLibrary mpi) : IDisposable
{
    private readonly Lock gate = new();
    private readonly CancellationTokenSource stop = new();
    private string? operation;
    private long startedAt;
    private TimeSpan limit;
    private int rank;
    private Thread? thread;

    public void Start(int worldRank)
    {
        rank = worldRank;
        thread = new Thread(Watch) { IsBackground = true, Name = "TianGong MPI watchdog" };
        thread.Start();
    }

    /// <summary>Marks <paramref name="what"/> as in flight until the returned scope is disposed; <paramref name="ownLimit"/> replaces the timeout for this call.</summary>
    public Scope Track(string what, TimeSpan? ownLimit = null)
    {
        lock (gate)
        {
            operation = what;
            startedAt = Environment.TickCount64;
            limit = ownLimit ?? timeout;
        }
        return new Scope(this);
    }

    private void Done()
    {
        lock (gate) operation = null;
    }

    private unsafe void Watch()
    {
        var poll = TimeSpan.FromMilliseconds(Math.Clamp(timeout.TotalMilliseconds / 10, 10, 1000));
        while (!stop.Token.WaitHandle.WaitOne(poll))
        {
            string? what;
            long elapsedMs;
            TimeSpan allowed;
            lock (gate)
            {
                what = operation;
                elapsedMs = Environment.TickCount64 - startedAt;
                allowed = limit;
            }
            if (what is null || allowed == System.Threading.Timeout.InfiniteTimeSpan || elapsedMs < allowed.TotalMilliseconds) continue;
            Console.Error.WriteLine($"error: rank {rank}: {what} did not finish within {allowed.TotalSeconds:0.#} s " +
                                    "(parallel.timeout_s): another rank died or hangs; ending the job");
            Console.Error.Flush();
            mpi.Abort(mpi.CommWorld, 3);
            Environment.Exit(3); // MPI_Abort does not return; this is for an MPI that lets it
        }
    }

    public void Dispose()
    {
        stop.Cancel();
        thread?.Join();
        stop.Dispose();
    }

    public readonly struct Scope(CollectiveWatchdog owner) : IDisposable
    {
        public void Dispose() => owner.Done();
    }
}
