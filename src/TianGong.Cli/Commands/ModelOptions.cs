using TianGong.Checkpoints;

namespace TianGong.Cli.Commands;

internal static class ModelOptions
{
    public static Tokenizers.ByteLevelBpeTokenizer RequireTokenizer(LoadedModel m, string instead) =>
        m.Tokenizer ?? throw new TianGongException($"{m.Directory}: no {ModelFolder.TokenizerFile}; pass {instead} instead");
}
