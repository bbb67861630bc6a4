using System.Runtime.InteropServices;

namespace TianGong.Parallelism.Communication;

/// <summary>
/// The few Open MPI C functions TianGong calls, bound by hand: the MPI.NET package (1.4.0) binds Microsoft MPI's
/// <c>msmpi.dll</c> with MS-MPI's integer handles (MPI_COMM_WORLD = 0x44000000), while Open MPI's handles are
/// pointers to global objects, so that package cannot talk to Debian's Open MPI. No other .NET binding exists.
/// </summary>
/// <remarks>
/// Open MPI's predefined handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM) are the addresses of exported globals
/// (<c>ompi_mpi_comm_world</c>, ...), read here with dlsym. The library is opened with RTLD_GLOBAL because Open MPI
/// loads its transport plugins with dlopen and those resolve symbols of libmpi from the global namespace.
/// MPI can be initialised once per process, so one instance lives as long as the process (<see cref="Shared"/>).
/// </remarks>
internal sealed unsafe class MpiLibrary
{
    private const string LibraryName = "libmpi.so.40"; // Open MPI 3.x-5.x keep this soname
    private const int RtldNow = 2, RtldGlobal = 0x100;
    public const int Success = 0;
    public const int ThreadFunneled = 1;
    public const int Undefined = -32766;
    public const nint InPlace = 1; // Open MPI defines MPI_IN_PLACE as ((void *) 1); MPICH uses -1

    // MPI is process-wide state in C already: one binding per process mirrors it, it is not state of ours.
    private static readonly Lazy<MpiLibrary> Instance = new(() => new MpiLibrary(), LazyThreadSafetyMode.ExecutionAndPublication);

    public static MpiLibrary Shared => Instance.Value;

    public readonly nint CommWorld, CommNull, Float, Double, Int, Long, Byte, OpSum, OpMax;

    public readonly delegate* unmanaged<int*, byte***, int, int*, int> Init_thread;
    public readonly delegate* unmanaged<int*, int> Initialized;
    public readonly delegate* unmanaged<int*, int> Finalized;
    public readonly delegate* unmanaged<int> Finalize;
    public readonly delegate* unmanaged<nint, int*, int> Comm_rank;
    public readonly delegate* unmanaged<nint, int*, int> Comm_size;
    public readonly delegate* unmanaged<nint, int, int, nint*, int> Comm_split;
    public readonly delegate* unmanaged<nint*, int> Comm_free;
    public readonly delegate* unmanaged<nint, nint, int, nint, nint, nint, int> Allreduce;
    public readonly delegate* unmanaged<nint, int, nint, nint, int, nint, nint, int> Allgather;
    public readonly delegate* unmanaged<nint, nint, int, nint, nint, nint, int> Reduce_scatter_block;
    public readonly delegate* unmanaged<nint, int, nint, int, nint, int> Bcast;
    public readonly delegate* unmanaged<nint, int, nint, nint, int, nint, nint, int> Alltoall;
    public readonly delegate* unmanaged<nint, int, nint, int, int, nint, int> Send;
    public readonly delegate* unmanaged<nint, int, nint, int, int, nint, MpiStatus*, int> Recv;
    public readonly delegate* unmanaged<nint, int, nint, int, int, nint, nint*, int> Isend;
    public readonly delegate* unmanaged<nint, int, nint, int, int, nint, nint*, int> Irecv;
    public readonly delegate* unmanaged<nint*, MpiStatus*, int> Wait;
    public readonly delegate* unmanaged<nint, int> Barrier;
    public readonly delegate* unmanaged<nint, int, int> Abort;
    public readonly delegate* unmanaged<int, byte*, int*, int> Error_string;

    private MpiLibrary()
    {
        nint lib = dlopen(LibraryName, RtldNow | RtldGlobal);
        if (lib == 0)
            throw new TianGongException($"MPI: cannot load {LibraryName} ({Marshal.PtrToStringUTF8(dlerror()) ?? "unknown error"}); " +
                                        "install Open MPI (Debian: apt-get install openmpi-bin libopenmpi-dev), or run through ./tiangong launch, which installs it");
        nint Sym(string name) => NativeLibrary.TryGetExport(lib, name, out var p) ? p
            : throw new TianGongException($"MPI: {LibraryName} has no symbol {name}; TianGong needs Open MPI 3.0 or newer");

        CommWorld = Sym("ompi_mpi_comm_world");
        CommNull = Sym("ompi_mpi_comm_null");
        Float = Sym("ompi_mpi_float");
        Double = Sym("ompi_mpi_double");
        Int = Sym("ompi_mpi_int");
        Long = Sym("ompi_mpi_long"); // C long is 64-bit on LP64 Linux, as torch's int64
        Byte = Sym("ompi_mpi_byte");
        OpSum = Sym("ompi_mpi_op_sum");
        OpMax = Sym("ompi_mpi_op_max");

        Init_thread = (delegate* unmanaged<int*, byte***, int, int*, int>)Sym("MPI_Init_thread");
        Initialized = (delegate* unmanaged<int*, int>)Sym("MPI_Initialized");
        Finalized = (delegate* unmanaged<int*, int>)Sym("MPI_Finalized");
        Finalize = (delegate* unmanaged<int>)Sym("MPI_Finalize");
        Comm_rank = (delegate* unmanaged<nint, int*, int>)Sym("MPI_Comm_rank");
        Comm_size = (delegate* unmanaged<nint, int*, int>)Sym("MPI_Comm_size");
        Comm_split = (delegate* unmanaged<nint, int, int, nint*, int>)Sym("MPI_Comm_split");
        Comm_free = (delegate* unmanaged<nint*, int>)Sym("MPI_Comm_free");
        Allreduce = (delegate* unmanaged<nint, nint, int, nint, nint, nint, int>)Sym("MPI_Allreduce");
        Allgather = (delegate* unmanaged<nint, int, nint, nint, int, nint, nint, int>)Sym("MPI_Allgather");
        Reduce_scatter_block = (delegate* unmanaged<nint, nint, int, nint, nint, nint, int>)Sym("MPI_Reduce_scatter_block");
        Bcast = (delegate* unmanaged<nint, int, nint, int, nint, int>)Sym("MPI_Bcast");
        Alltoall = (delegate* unmanaged<nint, int, nint, nint, int, nint, nint, int>)Sym("MPI_Alltoall");
        Send = (delegate* unmanaged<nint, int, nint, int, int, nint, int>)Sym("MPI_Send");
        Recv = (delegate* unmanaged<nint, int, nint, int, int, nint, MpiStatus*, int>)Sym("MPI_Recv");
        Isend = (delegate* unmanaged<nint, int, nint, int, int, nint, nint*, int>)Sym("MPI_Isend");
        Irecv = (delegate* unmanaged<nint, int, nint, int, int, nint, nint*, int>)Sym("MPI_Irecv");
        Wait = (delegate* unmanaged<nint*, MpiStatus*, int>)Sym("MPI_Wait");
        Barrier = (delegate* unmanaged<nint, int>)Sym("MPI_Barrier");
        Abort = (delegate* unmanaged<nint, int, int>)Sym("MPI_Abort");
        Error_string = (delegate* unmanaged<int, byte*, int*, int>)Sym("MPI_Error_string");
    }

    /// <summary>Throws when an MPI call failed (with the default MPI_ERRORS_ARE_FATAL handler MPI aborts first; this catches the rest).</summary>
    public void Check(int rc, string call)
    {
        if (rc == Success) return;
        var text = stackalloc byte[256]; // MPI_MAX_ERROR_STRING is 256 in Open MPI
        int length = 0;
        string message = Error_string(rc, text, &length) == Success ? Marshal.PtrToStringUTF8((nint)text, length) : $"error {rc}";
        throw new TianGongException($"MPI: {call} failed: {message}");
    }

    [DllImport("libc", EntryPoint = "dlopen")]
    private static extern nint dlopen(string file, int mode);

    [DllImport("libc", EntryPoint = "dlerror")]
    private static extern nint dlerror();
}

/// <summary>Open MPI's MPI_Status (ompi_status_public_t): source, tag, error, then two private fields.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct MpiStatus
{
    public int Source, Tag, Error, Cancelled;
    public nuint Count;
}
