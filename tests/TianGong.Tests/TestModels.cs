using TianGong.Models;
using TianGong.Models.Gpt2;
using TianGong.Models.Llama;
using TianGong.Models.Mistral;
using TianGong.Models.Qwen2;

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

    /// <summary>Window 4 on every layer, so that windows matter at test lengths.</summary>
    public static MistralConfig Mistral(int vocab = 64) => new(
        VocabSize: vocab, HiddenSize: 32, IntermediateSize: 64, NumHiddenLayers: 2, NumAttentionHeads: 4, NumKeyValueHeads: 2,
        MaxPositionEmbeddings: 64, RmsNormEps: 1e-5, SlidingWindow: 4, BosTokenId: 0, EosTokenId: 0);

    /// <summary>A window of 3 on the first layer only (max_window_layers 1), full attention on the second.</summary>
    public static Qwen2Config Qwen2(int vocab = 64) => new(
        VocabSize: vocab, HiddenSize: 32, IntermediateSize: 64, NumHiddenLayers: 2, NumAttentionHeads: 4, NumKeyValueHeads: 2,
        MaxPositionEmbeddings: 64, RmsNormEps: 1e-5, UseSlidingWindow: true, SlidingWindow: 3, MaxWindowLayers: 1,
        BosTokenId: 0, EosTokenId: 0);

    public static IEnumerable<object[]> BothFamilies() => [["gpt2"], ["llama"]];

    public static IEnumerable<object[]> DecoderFamilies() => [["gpt2"], ["llama"], ["mistral"], ["qwen2"]];

    public static ICausalLMConfig Config(string family, int vocab = 64) => family switch
    {
        "gpt2" => Gpt2(vocab),
        "llama" => Llama(vocab),
        "mistral" => Mistral(vocab),
        "qwen2" => Qwen2(vocab),
        _ => throw new ArgumentException(family),
    };

    public static CausalLM Create(string family, long seed = 42, int vocab = 64)
    {
        manual_seed(seed);                                  // for what the test draws next (inputs), as before
        var config = Config(family, vocab);
        var model = ModelConfigs.CreateCausalLM(config);
        // The weights from the model's own generator: test classes run in parallel and draw from the global one, so two
        // models created with one seed (the tests compare such pairs) would otherwise differ now and then.
        using var generator = new torch.Generator((ulong)seed);
        model.InitializeWeights(generator);
        return model;
    }

    /// <summary>
    /// Greedy KV-cache decoding of <paramref name="steps"/> tokens after a (B, T) prompt with a shared-length cache: the
    /// tokens (B, steps) and every step's last-position logits (steps, B, V), as the decode-kernel tests compare them.
    /// </summary>
    public static (Tensor Tokens, Tensor Logits) GreedyDecode(CausalLM model, Tensor prompt, int steps = 8, int capacity = 16)
    {
        using var cache = model.CreateCache(prompt.shape[0], capacity);
        var logits = new List<Tensor>();
        var tokens = new List<Tensor>();
        var step = model.forward(prompt, cache).select(1, -1);
        for (int i = 0; i < steps; i++)
        {
            logits.Add(step.detach());
            var next = step.argmax(-1).unsqueeze(1);
            tokens.Add(next);
            if (i + 1 < steps) step = model.forward(next, cache).select(1, -1);
        }
        return (cat(tokens, 1), stack(logits));
    }

    /// <summary>
    /// The decode kernels change no token and no logit beyond 1e-5: greedy decoding of an eval-mode model with
    /// autograd on (its parameters want gradients, so every op is libtorch's) against the same under no_grad.
    /// </summary>
    public static void AssertKernelDecodeMatchesLibtorch(CausalLM model, Tensor prompt)
    {
        var (libTokens, libLogits) = GreedyDecode(model, prompt);
        using var _ = no_grad();
        var (tokens, logits) = GreedyDecode(model, prompt);
        Assert.True(tokens.equal(libTokens).all().item<bool>());
        double diff = (logits - libLogits).abs().max().item<float>();
        Assert.True(diff < 1e-5, $"logits differ by {diff}");
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
