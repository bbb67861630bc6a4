using TianGong.Checkpoints;

namespace TianGong.Cli.Commands;

internal static class ModelOptions
{
    public static Tokenizers.ITextTokenizer RequireTokenizer(LoadedModel m, string instead) =>
        m.Tokenizer ?? throw new TianGongException($"{m.Directory}: no tokenizer ({ModelFolder.TokenizerFile}, vocab.json + merges.txt or tokenizer.model); pass {instead} instead");
}
