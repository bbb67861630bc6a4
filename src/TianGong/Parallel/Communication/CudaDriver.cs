using System.Runtime.InteropServices;

namespace TianGong.Parallelism.Communication;

/// <summary>
/// The few CUDA driver calls (<c>libcuda.so.1</c>, installed with every NVIDIA driver) that TorchSharp does not expose:
/// making a GPU's primary context current on this thread (NCCL joins the GPU current at ncclCommInitRank; TorchSharp
/// has no torch.cuda.set_device), and an event on the default stream that tells, without blocking, whether the work
/// queued before it has finished, so that a collective can be given up after a timeout.
/// </summary>
/// <remarks>
/// libtorch runs on the runtime's primary context and, since TorchSharp never changes streams, on the legacy default
/// stream; the driver's primary context and stream 0 are those same objects, so work queued here is ordered with
/// torch's kernels. NOT YET RUN ON A GPU (no GPU lent while this was written): bench/gpu.sh exercises it.
/// </remarks>
internal sealed unsafe class CudaDriver
{
    private const string LibraryName = "libcuda.so.1";
    private const int Success = 0, NotReady = 600; // CUDA_SUCCESS, CUDA_ERROR_NOT_READY
    private const uint EventDisableTiming = 0x2;   // CU_EVENT_DISABLE_TIMING

    private static readonly Lazy<CudaDriver> Instance = new(() => new CudaDriver(), LazyThreadSafetyMode.ExecutionAndPublication);

    public static CudaDriver Shared => Instance.Value;

    private readonly delegate* unmanaged<uint, int> init;
    private readonly delegate* unmanaged<int*, int, int> deviceGet;
    private readonly delegate* unmanaged<nint*, int, int> primaryCtxRetain;
    private readonly delegate* unmanaged<nint, int> ctxSetCurrent;
    private readonly delegate* unmanaged<nint*, uint, int> eventCreate;
    private readonly delegate* unmanaged<nint, nint, int> eventRecord;
    private readonly delegate* unmanaged<nint, int> eventQuery;
    private readonly delegate* unmanaged<nint, int> eventDestroy;
    private readonly delegate* unmanaged<int, byte**, int> getErrorString;

    private CudaDriver()
    {
        if (!NativeLibrary.TryLoad(LibraryName, out var lib))
            throw new TianGongException($"CUDA: cannot load {LibraryName}: no NVIDIA driver on this machine");
        nint Sym(string name) => NativeLibrary.TryGetExport(lib, name, out var p) ? p
            : throw new TianGongException($"CUDA: {LibraryName} has no symbol {name}; update the NVIDIA driver");
        init = (delegate* unmanaged<uint, int>)Sym("cuInit");
        deviceGet = (delegate* unmanaged<int*, int, int>)Sym("cuDeviceGet");
        primaryCtxRetain = (delegate* unmanaged<nint*, int, int>)Sym("cuDevicePrimaryCtxRetain");
        ctxSetCurrent = (delegate* unmanaged<nint, int>)Sym("cuCtxSetCurrent");
        eventCreate = (delegate* unmanaged<nint*, uint, int>)Sym("cuEventCreate");
        eventRecord = (delegate* unmanaged<nint, nint, int>)Sym("cuEventRecord");
        eventQuery = (delegate* unmanaged<nint, int>)Sym("cuEventQuery");
        eventDestroy = (delegate* unmanaged<nint, int>)Sym("cuEventDestroy_v2");
        getErrorString = (delegate* unmanaged<int, byte**, int>)Sym("cuGetErrorString");
        Check(init(0), "cuInit");
    }

    /// <summary>The primary context of GPU <paramref name="ordinal"/> (the one libtorch uses), made current on this thread.</summary>
    public nint MakeCurrent(int ordinal)
    {
        int device;
        Check(deviceGet(&device, ordinal), "cuDeviceGet");
        nint context;
        Check(primaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain");
        Check(ctxSetCurrent(context), "cuCtxSetCurrent");
        return context;
    }

    public void SetCurrent(nint context) => Check(ctxSetCurrent(context), "cuCtxSetCurrent");

    public nint CreateEvent()
    {
        nint e;
        Check(eventCreate(&e, EventDisableTiming), "cuEventCreate");
        return e;
    }

    /// <summary>Marks the end of the work queued so far on the default stream (stream 0, where NCCL and torch run).</summary>
    public void RecordOnDefaultStream(nint e) => Check(eventRecord(e, 0), "cuEventRecord");

    /// <summary>True when all work before the event has finished; false while it runs.</summary>
    public bool HasCompleted(nint e)
    {
        int result = eventQuery(e);
        if (result == NotReady) return false;
        Check(result, "cuEventQuery");
        return true;
    }

    public void DestroyEvent(nint e) => eventDestroy(e);

    private void Check(int result, string call)
    {
        if (result == Success) return;
        byte* text = null;
        string message = getErrorString is not null && getErrorString(result, &text) == Success && text is not null
            ? Marshal.PtrToStringUTF8((nint)text) ?? $"error {result}" : $"error {result}";
        throw new TianGongException($"CUDA: {call} failed: {message}");
    }
}
