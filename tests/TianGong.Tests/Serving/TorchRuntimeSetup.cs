using System.Runtime.CompilerServices;

namespace TianGong.Tests.Serving;

internal static class TorchRuntimeSetup
{
    /// <summary>The tests load libtorch as the CLI does: OpenMP waiters sleep instead of spinning (TorchRuntime.cs).</summary>
    [ModuleInitializer]
    internal static void Configure() => TorchRuntime.ConfigureBeforeFirstUse();
}
