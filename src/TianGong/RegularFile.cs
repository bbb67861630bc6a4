using System.Runtime.InteropServices;
using System.Text;

namespace TianGong;

/// <summary>
/// Reading a file someone else made (a downloaded model folder, a corpus) without letting it choose what we read:
/// only regular files are opened (a named pipe would block forever, /dev/zero would never end), text has a size
/// limit checked before reading, and errors say what is wrong without quoting bytes of the file.
/// </summary>
/// <remarks>
/// .NET reports FIFOs and devices as ordinary files (FileAttributes.Normal, length 0) and has no realpath, so both
/// come from libc: statx, whose struct layout is the same on every Linux architecture, and realpath.
/// </remarks>
public static partial class RegularFile
{
    /// <summary>The largest JSON file we read (config.json, indexes, tokenizer and generation configs).</summary>
    public const long MaxJsonBytes = 64L << 20;

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>What a path names, by its type bits (following symbolic links); null when nothing is there.</summary>
    public static string? KindOf(string path)
    {
        if (!OperatingSystem.IsLinux())
            return Directory.Exists(path) ? "directory" : File.Exists(path) ? "file" : null;
        var mode = StatMode(path);
        return mode is null ? null : (mode.Value & 0xF000) switch
        {
            0x8000 => "file",
            0x4000 => "directory",
            0x1000 => "named pipe",
            0x2000 => "character device",
            0x6000 => "block device",
            0xC000 => "socket",
            _ => "special file",
        };
    }

    /// <summary>Throws unless <paramref name="path"/> is an existing regular file; <paramref name="what"/> names it in errors.</summary>
    public static void Require(string path, string what = "file")
    {
        switch (KindOf(path))
        {
            case "file": return;
            case null: throw new TianGongException($"{path}: {what} not found");
            case var kind: throw new TianGongException($"{path}: is a {kind}, not a regular file; refusing to read it as the {what}");
        }
    }

    /// <summary>
    /// The whole file as strict UTF-8 text, at most <paramref name="maxBytes"/> long. The size is checked before any
    /// byte is read, and again while reading (a file that grows cannot push past the limit).
    /// </summary>
    public static string ReadText(string path, long maxBytes = MaxJsonBytes, string what = "file")
    {
        var bytes = ReadBytes(path, maxBytes, what);
        try
        {
            return StrictUtf8.GetString(bytes);
        }
        catch (DecoderFallbackException e)
        {
            throw new TianGongException($"{path}: not valid UTF-8 text (first bad byte at offset {e.Index})");
        }
    }

    /// <summary>Like <see cref="ReadText"/>, as bytes.</summary>
    public static byte[] ReadBytes(string path, long maxBytes = MaxJsonBytes, string what = "file")
    {
        Require(path, what);
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1, FileOptions.SequentialScan);
        long length = stream.Length;
        if (length > maxBytes)
            throw new TianGongException($"{path}: {length:N0} bytes is over the {Describe(maxBytes)} limit for a {what}");
        var buffer = new byte[length];
        stream.ReadExactly(buffer);
        if (stream.ReadByte() >= 0)
            throw new TianGongException($"{path}: grew while being read, past {length:N0} bytes");
        return buffer;
    }

    /// <summary>The canonical absolute path with every symbolic link resolved, or null when it does not exist.</summary>
    public static string? RealPath(string path)
    {
        if (OperatingSystem.IsWindows())
        {
            var full = Path.GetFullPath(path);
            if (!File.Exists(full) && !Directory.Exists(full)) return null;
            return new FileInfo(full).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? full;
        }
        var resolved = Native.realpath(path, IntPtr.Zero);
        if (resolved == IntPtr.Zero) return null;
        try
        {
            return Marshal.PtrToStringUTF8(resolved);
        }
        finally
        {
            Native.free(resolved);
        }
    }

    /// <summary>True when <paramref name="path"/> is <paramref name="root"/> or lies below it (both real paths).</summary>
    public static bool IsInside(string path, string root) =>
        path == root || path.StartsWith(root.EndsWith(Path.DirectorySeparatorChar) ? root : root + Path.DirectorySeparatorChar, StringComparison.Ordinal);

    private static string Describe(long bytes) => bytes % (1L << 20) == 0 ? $"{bytes >> 20} MiB" : $"{bytes:N0}-byte";

    private static unsafe int? StatMode(string path)
    {
        const int AtFdCwd = -100;
        const uint StatxType = 0x1;
        byte* buffer = stackalloc byte[256]; // struct statx is 256 bytes; stx_mode is the u16 at offset 28
        if (Native.statx(AtFdCwd, path, 0, StatxType, buffer) != 0) return null;
        return *(ushort*)(buffer + 28);
    }

    private static partial class Native
    {
        [LibraryImport("libc", StringMarshalling = StringMarshalling.Utf8)]
        internal static unsafe partial int statx(int dirfd, string path, int flags, uint mask, byte* buffer);

        [LibraryImport("libc", StringMarshalling = StringMarshalling.Utf8)]
        internal static partial IntPtr realpath(string path, IntPtr resolved);

        [LibraryImport("libc")]
        internal static partial void free(IntPtr pointer);
    }
}
