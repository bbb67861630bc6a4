using TianGong.Tests.Cli;
using TianGong.Tokenizers;

namespace TianGong.Tests.Data;

public sealed class DataPrepareCliTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    [Fact]
    public void Data_prepare_refuses_a_bad_tokenizer_path_an_output_that_is_a_file_and_an_empty_corpus_in_one_line()
    {
        var corpus = temp.Combine("corpus.txt");
        File.WriteAllText(corpus, "床前明月光\n\n疑是地上霜\n");
        var tokenizer = temp.Combine("tokenizer.json");
        ByteLevelBpeTrainer.Train(["床前明月光 疑是地上霜"], new BpeTrainerOptions(VocabSize: 270)).Save(tokenizer);
        var outputFile = temp.Combine("taken");
        File.WriteAllText(outputFile, "x");
        var blank = temp.Combine("blank.txt");
        File.WriteAllText(blank, "\n\n  \n");

        foreach (var (args, expected) in new (string[], string)[]
        {
            (["--corpus", corpus, "--tokenizer", temp.Combine("missing.json"), "--out", temp.Combine("o")], "--tokenizer file (tokenizer.json) not found"),
            (["--corpus", corpus, "--tokenizer", temp.Path, "--out", temp.Combine("o")], "is a directory, not a regular file"),
            (["--corpus", corpus, "--tokenizer", tokenizer, "--out", outputFile], "is a file; expected a folder"),
            (["--corpus", "/dev/null", "--tokenizer", tokenizer, "--out", temp.Combine("o")], "is a character device"),
            (["--corpus", blank, "--tokenizer", tokenizer, "--out", temp.Combine("o")], "no documents to tokenize"),
        })
        {
            var result = CliProcess.Run(temp.Path, ["data", "prepare", .. args]);
            Assert.Equal(1, result.ExitCode);
            Assert.Contains(expected, result.Stderr);
            Assert.DoesNotContain("   at ", result.All); // no stack trace
        }
    }
}
