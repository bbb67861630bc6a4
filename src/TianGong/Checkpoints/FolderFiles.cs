namespace TianGong.Checkpoints;

/// <summary>
/// The files of a model folder, treated as hostile: a name must be a plain file name, and what it resolves to
/// (symbolic links followed) must be a regular file inside the folder. An index naming <c>../../etc/passwd</c>, a
/// <c>model.safetensors</c> linked to <c>/etc/hostname</c> or a named pipe never gets opened.
/// </summary>
/// <remarks>
/// One layout of links is allowed out of the folder: Hugging Face's hub cache, where
/// <c>models--org--name/snapshots/REV/config.json</c> links to <c>../../blobs/HASH</c>. A folder named
/// <c>snapshots/REV</c> may therefore resolve into its repository folder (two levels up), and nowhere else.
/// </remarks>
public static class FolderFiles
{
    /// <summary>Throws unless <paramref name="name"/> is a file name with no directory part (what an index may list).</summary>
    public static void RequirePlainName(string name, string where)
    {
        bool plain = name.Length > 0 && name.Length <= 255 && name is not ("." or "..")
            && name.IndexOfAny(['/', '\\', '\0']) < 0 && !Path.IsPathRooted(name) && !name.Any(char.IsControl);
        if (!plain)
            throw new TianGongException($"{where}: '{Shown(name)}' is not a plain file name in the model folder (no directories, '..' or absolute paths)");
    }

    /// <summary>
    /// The path of <paramref name="name"/> in <paramref name="folder"/> when it is there and safe to read; null when
    /// nothing by that name is there. Throws (one line, never quoting the file) for a directory, a FIFO or device, or
    /// a link that leads outside the folder.
    /// </summary>
    public static string? Find(string folder, string name, string where)
    {
        RequirePlainName(name, where);
        var path = Path.Combine(folder, name);
        var link = new FileInfo(path).LinkTarget;
        var real = RegularFile.RealPath(path);
        if (real is null)
        {
            if (link is null) return null;
            throw new TianGongException($"{path}: is a symbolic link to a file that does not exist");
        }
        var root = RegularFile.RealPath(folder) ?? throw new TianGongException($"{folder}: model folder not found");
        if (!AllowedRoots(root).Any(r => RegularFile.IsInside(real, r)))
            throw new TianGongException($"{path}: resolves to a file outside the model folder; only files inside it are read");
        switch (RegularFile.KindOf(real))
        {
            case "file": return path;
            case "directory": throw new TianGongException($"{path}: is a directory, not a file");
            case null: return null;
            case var kind: throw new TianGongException($"{path}: is a {kind}, not a regular file; refusing to read it");
        }
    }

    /// <summary>Like <see cref="Find"/>, but a missing file is an error naming <paramref name="what"/>.</summary>
    public static string Require(string folder, string name, string where, string what) =>
        Find(folder, name, where) ?? throw new TianGongException($"{Path.Combine(folder, name)}: {what} not found");

    /// <summary>Throws when a file of the folder is larger than a reader of its kind should ever take in.</summary>
    public static void CheckSize(string path, long maxBytes, string what)
    {
        long length = new FileInfo(path).Length;
        if (length > maxBytes)
            throw new TianGongException($"{path}: {length:N0} bytes is over the {maxBytes >> 20} MiB limit for a {what}");
    }

    private static IEnumerable<string> AllowedRoots(string realFolder)
    {
        yield return realFolder;
        var snapshots = Path.GetDirectoryName(realFolder);
        if (snapshots is not null && Path.GetFileName(snapshots) == "snapshots" && Path.GetDirectoryName(snapshots) is { } repository
            && Directory.Exists(Path.Combine(repository, "blobs")))
            yield return Path.Combine(repository, "blobs");
    }

    /// <summary>A name from a file we read, made safe to print on one line.</summary>
    internal static string Shown(string text)
    {
        var clean = new string(text.Take(80).Select(c => char.IsControl(c) ? '?' : c).ToArray());
        return text.Length > 80 ? clean + "…" : clean;
    }
}
