using TianGong.Tests.Cli;
using TianGong.Tokenizers;

namespace TianGong.Tests.Data;

public sealed class DataPrepareCliTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    [Fact]
    public void Data_prepare_refuses_a_folder_as_tokenizer_a_file_as_output_and_a_blank_corpus_in_one_line()
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
            (["--corpus", corpus, "--tokenizer", temp.Path, "--out", temp.Combine("o")], "is a directory, not a regular file"),
            (["--corpus", corpus, "--tokenizer", tokenizer, "--out", outputFile], "is a file; expected a folder"),
            // (/dev/null, empty and non-UTF-8 corpora are refused by the readers: TextCorpusTests.)
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
