namespace TianGong.Tests.Cli;

public class TokenizerTrainCliTests
{
    [Fact]
    public void Out_as_a_folder_is_one_line_and_a_missing_parent_folder_is_made()
    {
        var dir = TestModels.TempDir();
        var corpus = Path.Combine(dir, "corpus.txt");
        File.WriteAllText(corpus, string.Concat(Enumerable.Repeat("春眠不覺曉，處處聞啼鳥。\n", 40)));

        var intoFolder = CliProcess.Run(dir, "tokenizer", "train", "--input", corpus, "--vocab-size", "300", "--out", dir);
        Assert.Equal(1, intoFolder.ExitCode);
        Assert.Contains("is a folder; give the tokenizer file's path", intoFolder.Stderr);
        Assert.Single(intoFolder.Stderr.Trim().Split('\n'));

        var nested = Path.Combine(dir, "new", "deeper", "tokenizer.json");
        var made = CliProcess.Run(dir, "tokenizer", "train", "--input", corpus, "--vocab-size", "300", "--out", nested);
        Assert.True(made.ExitCode == 0, made.All);
        Assert.True(File.Exists(nested));
    }
}
