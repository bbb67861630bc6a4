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
    /// A suite started in the background by a non-interactive shell (<c>./tiangong test &amp;</c>, nohup) ignores SIGINT,
    /// and every process it starts inherits that (POSIX), so the CLI would never see it and train on: then the CLI
    /// gets SIGTERM, which it handles the same way (finish the step, write a checkpoint).
    /// </summary>
    public static void Interrupt(Process process)
    {
        const int SIGINT = 2, SIGTERM = 15; // the same numbers on Linux and macOS
        int signal = SigIntIgnored() ? SIGTERM : SIGINT;
        if (kill(process.Id, signal) != 0)
            throw new InvalidOperationException($"kill({process.Id}, {signal}) failed: errno {Marshal.GetLastPInvokeError()}");
    }

    /// <summary>Whether this process ignores SIGINT (bit 1 of SigIgn in /proc/self/status), which its children inherit.</summary>
    private static bool SigIntIgnored()
    {
        if (!OperatingSystem.IsLinux()) return false;
        var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("SigIgn:", StringComparison.Ordinal));
        return line is not null && (Convert.ToUInt64(line["SigIgn:".Length..].Trim(), 16) & (1UL << (2 - 1))) != 0;
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
