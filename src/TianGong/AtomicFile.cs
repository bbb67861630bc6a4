using System.Security.Cryptography;

namespace TianGong;

/// <summary>
/// Writes a file so that readers see either the old contents or the complete new ones, never a torn file:
/// a crash mid-save must not destroy the last good checkpoint or chart.
/// </summary>
internal static class AtomicFile
{
    public static void Write(string path, Action<FileStream> write)
    {
        var fullPath = Path.GetFullPath(path);
        // Same directory as the target, so the final rename never crosses file systems.
        var tempPath = $"{fullPath}.tmp-{Convert.ToHexString(RandomNumberGenerator.GetBytes(6)).ToLowerInvariant()}";
        try
        {
            using (var stream = new FileStream(tempPath, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                write(stream);
                stream.Flush(flushToDisk: true); // fsync before the rename, or a power cut may leave an empty file under the final name
            }
            File.Move(tempPath, fullPath, overwrite: true);
        }
        catch
        {
            File.Delete(tempPath); // no-op when it was never created
            throw;
        }
    }

    /// <summary>Copies <paramref name="source"/> over <paramref name="destination"/> the same way: never a half-copied file under its name.</summary>
    public static void Copy(string source, string destination)
    {
        using var input = new FileStream(source, FileMode.Open, FileAccess.Read, FileShare.Read);
        Write(destination, output => input.CopyTo(output));
    }
}
