using System.Diagnostics;

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
        return Wait(process, args);
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

    /// <summary>Sends SIGINT, as Ctrl-C in a terminal does.</summary>
    public static void Interrupt(Process process) => Process.Start("kill", ["-INT", process.Id.ToString()])!.WaitForExit();

    public static Result Wait(Process process, string[] args)
    {
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(5)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"tiangong {string.Join(' ', args)} did not finish in 5 minutes");
        }
        return new Result(process.ExitCode, stdout.Result, stderr.Result);
    }
}
