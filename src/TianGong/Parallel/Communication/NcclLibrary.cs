using System.Runtime.InteropServices;

namespace TianGong.Parallelism.Communication;

/// <summary>
/// The NCCL C functions TianGong calls (nccl.h of NVIDIA/nccl), bound by hand from <c>libnccl.so.2</c>: no .NET
/// package binds NCCL, and TorchSharp has no torch.distributed. Opened once per process (<see cref="Shared"/>)
/// because NCCL, like MPI, is process-wide state in C.
/// </summary>
/// <remarks>
/// NOT YET RUN ON A GPU: no GPU was lent while this was written. What ran is the library-missing error, the dtype
/// and operation mapping and the unique-id framing; bench/gpu.sh runs the rest on a machine with 2 GPUs.
/// </remarks>
internal sealed unsafe class NcclLibrary
{
    public const string LibraryName = "libnccl.so.2";
    public const int UniqueIdBytes = 128; // NCCL_UNIQUE_ID_BYTES

    // ncclResult_t
    public const int Success = 0, InProgress = 7;

    // One binding per process mirrors NCCL's own process-wide state; it is not state of ours.
    private static readonly Lazy<NcclLibrary> Instance = new(() => Open(LibraryName), LazyThreadSafetyMode.ExecutionAndPublication);

    public static NcclLibrary Shared => Instance.Value;

    public readonly delegate* unmanaged<int*, int> GetVersion;
    public readonly delegate* unmanaged<NcclUniqueId*, int> GetUniqueId;
    public readonly delegate* unmanaged<nint*, int, NcclUniqueId, int, int> CommInitRank;
    /// <summary>ncclCommSplit (NCCL 2.18 and newer); null on older libraries, which make sub-groups from a new unique id instead.</summary>
    public readonly delegate* unmanaged<nint, int, int, nint*, nint, int> CommSplit;
    public readonly delegate* unmanaged<nint, int> CommDestroy;
    public readonly delegate* unmanaged<nint, int> CommAbort;
    public readonly delegate* unmanaged<nint, int*, int> CommGetAsyncError;
    public readonly delegate* unmanaged<int, nint> GetErrorString;
    public readonly delegate* unmanaged<nint, nint, nuint, int, int, nint, nint, int> AllReduce;
    public readonly delegate* unmanaged<nint, nint, nuint, int, int, nint, nint, int> Broadcast;
    public readonly delegate* unmanaged<nint, nint, nuint, int, nint, nint, int> AllGather;
    public readonly delegate* unmanaged<nint, nint, nuint, int, int, nint, nint, int> ReduceScatter;
    public readonly delegate* unmanaged<nint, nuint, int, int, nint, nint, int> Send;
    public readonly delegate* unmanaged<nint, nuint, int, int, nint, nint, int> Recv;
    public readonly delegate* unmanaged<int> GroupStart;
    public readonly delegate* unmanaged<int> GroupEnd;

    /// <summary>The library's version code, e.g. 22703 for 2.27.3.</summary>
    public int Version { get; }

    private NcclLibrary(nint lib)
    {
        nint Sym(string name) => NativeLibrary.TryGetExport(lib, name, out var p) ? p
            : throw new TianGongException($"NCCL: {LibraryName} has no symbol {name}; TianGong needs NCCL 2.10 or newer");
        GetVersion = (delegate* unmanaged<int*, int>)Sym("ncclGetVersion");
        GetUniqueId = (delegate* unmanaged<NcclUniqueId*, int>)Sym("ncclGetUniqueId");
        CommInitRank = (delegate* unmanaged<nint*, int, NcclUniqueId, int, int>)Sym("ncclCommInitRank");
        CommSplit = NativeLibrary.TryGetExport(lib, "ncclCommSplit", out var split) ? (delegate* unmanaged<nint, int, int, nint*, nint, int>)split : null;
        CommDestroy = (delegate* unmanaged<nint, int>)Sym("ncclCommDestroy");
        CommAbort = (delegate* unmanaged<nint, int>)Sym("ncclCommAbort");
        CommGetAsyncError = (delegate* unmanaged<nint, int*, int>)Sym("ncclCommGetAsyncError");
        GetErrorString = (delegate* unmanaged<int, nint>)Sym("ncclGetErrorString");
        AllReduce = (delegate* unmanaged<nint, nint, nuint, int, int, nint, nint, int>)Sym("ncclAllReduce");
        Broadcast = (delegate* unmanaged<nint, nint, nuint, int, int, nint, nint, int>)Sym("ncclBroadcast");
        AllGather = (delegate* unmanaged<nint, nint, nuint, int, nint, nint, int>)Sym("ncclAllGather");
        ReduceScatter = (delegate* unmanaged<nint, nint, nuint, int, int, nint, nint, int>)Sym("ncclReduceScatter");
        Send = (delegate* unmanaged<nint, nuint, int, int, nint, nint, int>)Sym("ncclSend");
        Recv = (delegate* unmanaged<nint, nuint, int, int, nint, nint, int>)Sym("ncclRecv");
        GroupStart = (delegate* unmanaged<int>)Sym("ncclGroupStart");
        GroupEnd = (delegate* unmanaged<int>)Sym("ncclGroupEnd");
        int version;
        Check(GetVersion(&version), "ncclGetVersion");
        Version = version;
    }

    /// <summary>Opens <paramref name="name"/>; a missing library is one line that says how to install it.</summary>
    public static NcclLibrary Open(string name)
    {
        if (!NativeLibrary.TryLoad(name, out var lib))
            throw new TianGongException($"NCCL: cannot load {name}; --device cuda in a parallel job needs NVIDIA's NCCL: install libnccl2 " +
                                        "(NVIDIA's CUDA apt repository, or Debian non-free: apt-get install libnccl2), see the README's parallel section");
        return new NcclLibrary(lib);
    }

    /// <summary>"2.27.3" from a version code (NCCL 2.9 and newer: major·10000 + minor·100 + patch; older: major·1000 + minor·100 + patch).</summary>
    public static string VersionText(int code) =>
        code >= 10000 ? $"{code / 10000}.{code / 100 % 100}.{code % 100}" : $"{code / 1000}.{code / 100 % 10}.{code % 100}";

    /// <summary>Throws when an NCCL call failed, with NCCL's own words for the error.</summary>
    public void Check(int result, string call)
    {
        if (result == Success) return;
        throw new TianGongException($"NCCL: {call} failed: {ErrorText(result)}");
    }

    public string ErrorText(int result) => Marshal.PtrToStringUTF8(GetErrorString(result)) ?? $"error {result}";

    /// <summary>ncclDataType_t of a torch dtype; null when NCCL has none (bool, complex).</summary>
    public static int? DataType(ScalarType dtype) => dtype switch
    {
        ScalarType.Int8 => 0,      // ncclInt8
        ScalarType.Byte => 1,      // ncclUint8
        ScalarType.Int32 => 2,     // ncclInt32
        ScalarType.Int64 => 4,     // ncclInt64
        ScalarType.Float16 => 6,   // ncclFloat16
        ScalarType.Float32 => 7,   // ncclFloat32
        ScalarType.Float64 => 8,   // ncclFloat64
        ScalarType.BFloat16 => 9,  // ncclBfloat16 (NCCL 2.10 and newer)
        _ => null,
    };

    /// <summary>ncclRedOp_t of a reduction.</summary>
    public static int Operation(ReduceOp op) => op switch
    {
        ReduceOp.Sum => 0, // ncclSum
        ReduceOp.Max => 2, // ncclMax
        _ => throw new ArgumentOutOfRangeException(nameof(op), op, "no NCCL reduction for this operation"),
    };
}

/// <summary>ncclUniqueId: 128 opaque bytes made by one rank and handed to all others (here over MPI) to join one communicator.</summary>
[StructLayout(LayoutKind.Sequential, Size = NcclLibrary.UniqueIdBytes)]
internal unsafe struct NcclUniqueId
{
    public fixed byte Internal[NcclLibrary.UniqueIdBytes];

    public static NcclUniqueId FromBytes(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length != NcclLibrary.UniqueIdBytes)
            throw new TianGongException($"NCCL: a unique id has {NcclLibrary.UniqueIdBytes} bytes, got {bytes.Length}");
        var id = new NcclUniqueId();
        bytes.CopyTo(new Span<byte>(id.Internal, NcclLibrary.UniqueIdBytes));
        return id;
    }

    public byte[] ToBytes()
    {
        fixed (byte* p = Internal) return new ReadOnlySpan<byte>(p, NcclLibrary.UniqueIdBytes).ToArray();
    }

    /// <summary>
    /// Rank <paramref name="root"/> of <paramref name="group"/> makes the id (<paramref name="create"/>) and sends its 128 bytes to the
    /// others as a uint8 CPU tensor over <paramref name="broadcast"/> (the MPI group's broadcast); every rank returns the same id.
    /// </summary>
    public static NcclUniqueId Share(int rank, int root, Func<NcclUniqueId> create, Action<Tensor, int> broadcast)
    {
        using var wire = zeros(NcclLibrary.UniqueIdBytes, ScalarType.Byte);
        if (rank == root) create().ToBytes().CopyTo(wire.bytes);
        broadcast(wire, root);
        return FromBytes(wire.bytes);
    }
}
