using System.Runtime.InteropServices;

namespace TianGong.Tests.Serving;

public class TorchRuntimeTests
{
    [DllImport("libc")]
    private static extern IntPtr getenv([MarshalAs(UnmanagedType.LPUTF8Str)] string name);

    [Fact]
    public void The_wait_policy_is_in_the_native_environment_libgomp_reads()
    {
        // The module initializer ran before any test; the native environ (not just .NET's copy) must hold the policy.
        var expected = TorchRuntime.ConfigureBeforeFirstUse();
        if (expected == "default") return; // the user set GOMP_SPINCOUNT only: nothing of ours to check
        Assert.Equal(expected, Marshal.PtrToStringUTF8(getenv("OMP_WAIT_POLICY")));
    }
}
