namespace TianGong.Tests.Checkpoints;

public class AtomicFileTests
{
    /// <summary>
    /// The copy lands under a temporary name and is renamed over the old file: a reader that opened the old file still
    /// reads it whole (an in-place copy would truncate it under the reader), new readers get the new bytes, no temp is left.
    /// </summary>
    [Fact]
    public void Copy_replaces_the_file_by_rename_not_in_place()
    {
        var dir = TestModels.TempDir();
        var source = Path.Combine(dir, "source.json");
        var destination = Path.Combine(dir, "config.json");
        byte[] fresh = [.. Enumerable.Range(0, 100_000).Select(i => (byte)(i * 7))];
        File.WriteAllBytes(source, fresh);
        File.WriteAllText(destination, "the old contents");

        using (var reader = new FileStream(destination, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete))
        {
            AtomicFile.Copy(source, destination);
            using var text = new StreamReader(reader);
            Assert.Equal("the old contents", text.ReadToEnd());
        }
        Assert.Equal(fresh, File.ReadAllBytes(destination));
        Assert.Empty(Directory.GetFiles(dir, "*.tmp-*"));

        Assert.Throws<FileNotFoundException>(() => AtomicFile.Copy(Path.Combine(dir, "missing.json"), destination));
        Assert.Equal(fresh, File.ReadAllBytes(destination));
    }
}
