using TianGong.Models;
using TianGong.Models.Gpt2;
using TianGong.Models.Llama;

namespace TianGong.Tests;

/// <summary>Tiny configs of each family, small enough that a test trains or decodes in well under a second.</summary>
internal static class TestModels
{
    public static Gpt2Config Gpt2(int vocab = 64, bool tied = true) => new(
        VocabSize: vocab, NPositions: 64, NEmbd: 32, NLayer: 2, NHead: 4, ResidPdrop: 0, EmbdPdrop: 0, AttnPdrop: 0,
        TieWordEmbeddings: tied, BosTokenId: 0, EosTokenId: 0);

    public static LlamaConfig Llama(int vocab = 64, bool tied = false) => new(
        VocabSize: vocab, HiddenSize: 32, IntermediateSize: 64, NumHiddenLayers: 2, NumAttentionHeads: 4, NumKeyValueHeads: 2,
        MaxPositionEmbeddings: 64, RmsNormEps: 1e-5, TieWordEmbeddings: tied, BosTokenId: 0, EosTokenId: 0);

    public static IEnumerable<object[]> BothFamilies() => [["gpt2"], ["llama"]];

    public static CausalLM Create(string family, long seed = 42, int vocab = 64)
    {
        manual_seed(seed);
        ICausalLMConfig config = family == "gpt2" ? Gpt2(vocab) : Llama(vocab);
        var model = ModelConfigs.CreateCausalLM(config);
        model.InitializeWeights();
        return model;
    }

    public static string FixturePath(params string[] parts) =>
        Path.Combine([AppContext.BaseDirectory, "Fixtures", .. parts]);

    public static string TempDir()
    {
        var dir = Path.Combine(Path.GetTempPath(), "tiangong-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }
}
