using System.Runtime.InteropServices;

namespace TianGong;

/// <summary>
/// Native settings that libtorch reads once, when it is loaded: call <see cref="ConfigureBeforeFirstUse"/> at the top of
/// every entry point, before the first torch call.
///
/// libtorch's CPU build runs its kernels on the GNU OpenMP runtime it bundles (libgomp), whose idle threads spin at
/// every barrier. On a machine where another process keeps a core busy, a spinning waiter takes the time slice the
/// thread still working needs, and throughput falls far below the busy core's share. OMP_WAIT_POLICY=PASSIVE makes
/// waiters sleep at once. libgomp reads the variable from the native environment when it loads; .NET's
/// Environment.SetEnvironmentVariable only changes the runtime's own copy on Linux, so the variable goes through libc's
/// setenv. A value the user has already set (OMP_WAIT_POLICY=ACTIVE for a dedicated machine, or GOMP_SPINCOUNT) wins.
/// </summary>
public static class TorchRuntime
{
    /// <summary>What TianGong sets when the user has not: waiters sleep rather than spin.</summary>
    public const string DefaultWaitPolicy = "PASSIVE";

    /// <summary>Sets OMP_WAIT_POLICY for libgomp unless the user set it or GOMP_SPINCOUNT; returns the policy in effect ("default" when only a spin count is set).</summary>
    public static string ConfigureBeforeFirstUse()
    {
        var policy = Environment.GetEnvironmentVariable("OMP_WAIT_POLICY");
        if (!string.IsNullOrEmpty(policy)) return policy;
        if (!string.IsNullOrEmpty(Environment.GetEnvironmentVariable("GOMP_SPINCOUNT"))) return "default";
        Environment.SetEnvironmentVariable("OMP_WAIT_POLICY", DefaultWaitPolicy); // for child processes started through .NET
        if (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS()) SetNative("OMP_WAIT_POLICY", DefaultWaitPolicy);
        return DefaultWaitPolicy;
    }

    private static void SetNative(string name, string value)
    {
        if (setenv(name, value, 0) != 0)
            throw new TianGongException($"could not set {name} in the native environment (setenv failed with errno {Marshal.GetLastPInvokeError()})");
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int setenv([MarshalAs(UnmanagedType.LPUTF8Str)] string name, [MarshalAs(UnmanagedType.LPUTF8Str)] string value, int overwrite);
}
