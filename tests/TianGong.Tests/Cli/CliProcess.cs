using System.Diagnostics;
using System.Runtime.InteropServices;

namespace TianGong.Tests.Cli;

/// <summary>Runs the real CLI (TianGong.Cli.dll, copied beside the tests) as a user would, in a separate process.</summary>
internal static class CliProcess
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr)
    {
        public string All => Stdout + Stderr;
    }

    public static Result Run(string home, params string[] args)
    {
        using var process = Start(home, args);
        try
        {
            return Wait(process, args);
        }
        finally
        {
            Stop(process);
        }
    }

    public static Process Start(string home, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "TianGong.Cli.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["TIANGONG_HOME"] = home;
        psi.Environment["TIANGONG_OFFLINE"] = "1"; // tests never download datasets
        psi.Environment["NO_COLOR"] = "1";
        psi.Environment["COLUMNS"] = "200";
        return Process.Start(psi)!;
    }

    /// <summary>
    /// Sends SIGINT, as Ctrl-C in a terminal does: through libc's kill(2), since .NET has no API for it and the
    /// <c>kill</c> program is missing on minimal images (procps).
    /// </summary>
    public static void Interrupt(Process process)
    {
        const int SIGINT = 2; // the same number on Linux and macOS
        if (kill(process.Id, SIGINT) != 0)
            throw new InvalidOperationException($"kill({process.Id}, SIGINT) failed: errno {Marshal.GetLastPInvokeError()}");
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int sig);

    /// <summary>Ends the process and its children if still running: call it in a finally, so a failing test leaves nothing behind.</summary>
    public static void Stop(Process process)
    {
        try
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException)
        {
            // exited between the check and the kill
        }
    }

    public static Result Wait(Process process, string[] args)
    {
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(5)))
        {
            Stop(process);
            throw new TimeoutException($"tiangong {string.Join(' ', args)} did not finish in 5 minutes");
        }
        return new Result(process.ExitCode, stdout.Result, stderr.Result);
    }
}
