using System.Runtime.InteropServices;

namespace TianGong;

/// <summary>Where a tensor's elements are: what native kernels (ours, NCCL) read and write.</summary>
public static class TensorMemory
{
    /// <summary>
    /// The address of the tensor's first element (device memory for a CUDA tensor), from libtorch's data_ptr() through
    /// TorchSharp's native export THSTensor_data: TorchSharp binds it internally only, and Tensor.bytes works for CPU tensors alone.
    /// </summary>
    public static unsafe nint DataPointer(Tensor tensor)
    {
        if (tensor.numel() == 0) return 0;
        nint address = NativeTensorData.Get(tensor.Handle);
        if (address == 0) throw new TianGongException($"cannot read the data address of a {tensor.dtype} tensor on {tensor.device}");
        GC.KeepAlive(tensor);
        return address;
    }

    private static unsafe class NativeTensorData
    {
        // libLibTorchSharp is loaded by TorchSharp before any tensor exists; resolve it through TorchSharp's assembly, as TorchSharp does.
        private static readonly delegate* unmanaged<nint, nint> Data = (delegate* unmanaged<nint, nint>)NativeLibrary.GetExport(
            NativeLibrary.Load("LibTorchSharp", typeof(torch).Assembly, null), "THSTensor_data");

        public static nint Get(nint handle) => Data(handle);
    }
}
