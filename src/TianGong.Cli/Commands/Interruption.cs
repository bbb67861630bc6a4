using System.Runtime.InteropServices;

namespace TianGong.Cli.Commands;

/// <summary>
/// The first Ctrl-C (or SIGTERM) asks a long command to stop cleanly — training finishes its step and writes a
/// checkpoint; a second one ends the process at once. Atomic saves keep the last complete checkpoint intact either way.
/// </summary>
internal sealed class Interruption : IDisposable
{
    private readonly CancellationTokenSource source;
    private readonly PosixSignalRegistration[] registrations;

    public Interruption(CancellationToken outer)
    {
        source = CancellationTokenSource.CreateLinkedTokenSource(outer);
        registrations = [PosixSignalRegistration.Create(PosixSignal.SIGINT, Handle), PosixSignalRegistration.Create(PosixSignal.SIGTERM, Handle)];
    }

    public CancellationToken Token => source.Token;

    private void Handle(PosixSignalContext context)
    {
        if (source.IsCancellationRequested) return; // second signal: default handling ends the process
        context.Cancel = true;
        Console.Error.WriteLine("interrupted: finishing the current step and writing a checkpoint (interrupt again to stop at once)");
        source.Cancel();
    }

    public void Dispose()
    {
        foreach (var r in registrations) r.Dispose();
        source.Dispose();
    }
}
