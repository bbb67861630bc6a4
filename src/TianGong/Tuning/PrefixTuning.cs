using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Models;
using TianGong.Models.Layers;
using TorchSharp.Modules;

namespace TianGong.Tuning;

/// <summary>
/// The trainable part of prefix tuning, laid out as PEFT's <c>PrefixEncoder</c>: an embedding of the n virtual tokens,
/// either directly the flat prefix (n, layers·2·kvHeads·headDim) or, with <c>prefix_projection</c> (P-tuning v2's
/// reparameterisation), (n, token_dim) embeddings sent through Linear → tanh → Linear to that flat prefix.
/// </summary>
public sealed class PrefixEncoder : nn.Module
{
    private readonly EmbeddingTable embedding;
    private readonly Sequential? transform;

    /// <param name="tokenDim">kvHeads·headDim, PEFT's token_dim for prefix tuning (grouped-query models have fewer key/value heads than query heads).</param>
    public PrefixEncoder(int virtualTokens, int layers, int tokenDim, int? encoderHiddenSize) : base(nameof(PrefixEncoder))
    {
        VirtualTokens = virtualTokens;
        FlatWidth = (long)layers * 2 * tokenDim;
        if (encoderHiddenSize is { } hidden)
        {
            embedding = new EmbeddingTable(virtualTokens, tokenDim);
            transform = nn.Sequential(("0", nn.Linear(tokenDim, hidden)), ("1", nn.Tanh()), ("2", nn.Linear(hidden, FlatWidth)));
        }
        else embedding = new EmbeddingTable(virtualTokens, FlatWidth);
        RegisterComponents();
    }

    public int VirtualTokens { get; }

    public long FlatWidth { get; }

    public bool Projected => transform is not null;

    public Parameter EmbeddingWeight => embedding.weight!;

    /// <summary>(n, layers·2·kvHeads·headDim): what PEFT saves as <c>prompt_embeddings</c> and views as past_key_values.</summary>
    public Tensor Prefix() => transform is null ? embedding.weight!.alias() : transform.forward(embedding.weight!);
}

/// <summary>
/// Prefix tuning (Li and Liang 2021) and P-tuning v2 (Liu et al. 2022): trainable keys and values of n virtual tokens in
/// front of every layer's attention, the base model frozen. They go in as transformers takes PEFT's prefix: as the
/// first n positions of the KV cache (<see cref="KvCache.Prefill"/>, keeping their autograd graph), the attention mask
/// gets n ones in front, and the real tokens' positions start at n (they follow the cached positions, as
/// transformers counts them from past_key_values' length). The virtual tokens have no hidden states and no logits of
/// their own. A <see cref="CausalLM"/> itself, so the trainer, generator, scorer and evaluator take it as any model.
/// State-dict keys: <c>base_model.*</c> and <c>prompt_encoder.*</c>.
/// </summary>
public sealed class PrefixTunedLM : CausalLM
{
    private readonly CausalLM base_model;
    private readonly PrefixEncoder prompt_encoder;
    private readonly int layers;
    private readonly long kvHeads, headDim;

    public PrefixTunedLM(CausalLM baseModel, PrefixEncoder encoder) : base(nameof(PrefixTunedLM))
    {
        (layers, kvHeads, headDim) = CacheShape(baseModel);
        if (encoder.FlatWidth != layers * 2 * kvHeads * headDim)
            throw new TianGongException($"prefix: {encoder.FlatWidth} values per virtual token, but the model needs {layers * 2 * kvHeads * headDim} ({layers} layers × 2 × {kvHeads} key/value heads × {headDim})");
        base_model = baseModel;
        prompt_encoder = encoder;
        var first = baseModel.parameters().First();
        prompt_encoder.to(first.dtype).to(first.device);
        RegisterComponents();
    }

    /// <summary>(layers, kvHeads, headDim) of the model's KV cache: what the prefix has to fill.</summary>
    public static (int Layers, long KvHeads, long HeadDim) CacheShape(CausalLM model)
    {
        using var probe = model.CreateCache(1, 1);
        return (probe.Layers, probe.KeyValueHeads, probe.HeadDim);
    }

    public CausalLM Base => base_model;

    public PrefixEncoder Encoder => prompt_encoder;

    public int VirtualTokens => prompt_encoder.VirtualTokens;

    /// <summary>The base config, its context shortened by the n cache slots and positions the prefix takes (generation and scoring stop in time).</summary>
    public override ICausalLMConfig Config => new ReservedContextConfig(base_model.Config, VirtualTokens);

    /// <summary>
    /// Per layer, keys and values (1, kvHeads, n, headDim): PEFT's view of the flat prefix as (n, layers·2, kvHeads,
    /// headDim), permuted so that entry 2l holds layer l's keys and 2l+1 its values.
    /// </summary>
    public (Tensor[] Keys, Tensor[] Values) PastKeyValues()
    {
        int n = VirtualTokens;
        var kv = prompt_encoder.Prefix().view(n, layers * 2, kvHeads, headDim).permute(1, 2, 0, 3);   // (2L, Hkv, n, D)
        var keys = new Tensor[layers];
        var values = new Tensor[layers];
        for (int l = 0; l < layers; l++)
        {
            keys[l] = kv[2 * l].unsqueeze(0);
            values[l] = kv[2 * l + 1].unsqueeze(0);
        }
        return (keys, values);
    }

    protected internal override TrunkOutput Trunk(DecoderInput input)
    {
        using var scope = NewDisposeScope();
        var (b, t) = input.Shape();
        int n = VirtualTokens;
        if (n == 0) return base_model.Trunk(input).MoveToOuterDisposeScope();
        // A call without a cache gets one of its own for the prefix; a caller's cache gets the prefix on its first call.
        using var own = input.Cache is null ? base_model.CreateCache(b, n + (int)t) : null;
        var cache = input.Cache ?? own!;
        if (cache.HasPerRowLengths)
            throw new TianGongException("prefix tuning: a cache with per-row lengths (the serving engine's batching) is not supported; run the model without it");
        if (cache.Length == 0)
        {
            var (keys, values) = PastKeyValues();
            cache.Prefill(keys, values);
        }
        Tensor? mask = input.AttentionMask is { } m ? cat([ones(b, n, m.dtype, m.device), m], 1) : null;
        Tensor? positions = input.PositionIds is { } p ? p + n : null;
        return base_model.Trunk(input with { Cache = cache, AttentionMask = mask, PositionIds = positions }).MoveToOuterDisposeScope();
    }

    protected internal override Tensor LmHead(Tensor hidden) => base_model.LmHead(hidden);

    public override Tensor EmbedTokens(Tensor inputIds) => base_model.EmbedTokens(inputIds);

    /// <summary>The virtual tokens occupy the first n cache slots of every row.</summary>
    public override KvCache CreateCache(long batch, int maxLength) => base_model.CreateCache(batch, maxLength + VirtualTokens);

    public override void InitializeWeights(torch.Generator? generator = null) => base_model.InitializeWeights(generator);
}

/// <summary>A decoder config whose context is <paramref name="reserved"/> positions shorter: those are taken by virtual tokens.</summary>
internal sealed class ReservedContextConfig(ICausalLMConfig inner, int reserved) : ICausalLMConfig
{
    public int ContextLength => inner.ContextLength - reserved;
    public int LayerCount => inner.LayerCount;
    public int ModelWidth => inner.ModelWidth;
    public int? BosTokenId => inner.BosTokenId;
    public int? EosTokenId => inner.EosTokenId;
    public bool TieWordEmbeddings => inner.TieWordEmbeddings;
    public string ModelType => inner.ModelType;
    public string Architecture => inner.Architecture;
    public int VocabSize => inner.VocabSize;

    public void Validate() => inner.Validate();

    public ICausalLMConfig WithTokenizer(int vocabSize, int bosTokenId, int eosTokenId) => new ReservedContextConfig(inner.WithTokenizer(vocabSize, bosTokenId, eosTokenId), reserved);
}

/// <summary>
/// PEFT's PrefixTuningConfig for a causal LM. <paramref name="PrefixProjection"/>: P-tuning v2's reparameterisation MLP
/// (hidden width <paramref name="EncoderHiddenSize"/>, default token_dim) during training. As PEFT does, the adapter
/// file holds only the MLP's output, <c>prompt_embeddings</c> (n, layers·2·token_dim): the projection is a training
/// device and is not saved (PEFT loads such a file into a plain prefix, in inference mode); resuming a run keeps it
/// through the run's own checkpoints.
/// </summary>
public sealed record PrefixTuningConfig(int NumVirtualTokens, bool PrefixProjection = false, int? EncoderHiddenSize = null, string? BaseModelNameOrPath = null)
{
    public const string PeftType = "PREFIX_TUNING";

    /// <summary>A prefix for <paramref name="model"/>, initialised as PEFT's (torch's N(0, 1) embedding, default Linear init) from torch's seeded generator.</summary>
    public PrefixTunedLM Create(CausalLM model)
    {
        ConfigChecks.InRange("--virtual-tokens", NumVirtualTokens, 1, model.Config.ContextLength - 1);
        var (layers, kvHeads, headDim) = PrefixTunedLM.CacheShape(model);
        int tokenDim = (int)(kvHeads * headDim);
        if (EncoderHiddenSize is { } h) ConfigChecks.InRange("--prefix-hidden", h, 1, 1 << 16);
        return new PrefixTunedLM(model, new PrefixEncoder(NumVirtualTokens, layers, tokenDim, PrefixProjection ? EncoderHiddenSize ?? tokenDim : null));
    }

    /// <summary>adapter_config.json + adapter_model.safetensors (<c>prompt_embeddings</c>) as PEFT's save_pretrained writes PREFIX_TUNING.</summary>
    public void Save(PrefixTunedLM model, string dir)
    {
        Directory.CreateDirectory(dir);
        using (no_grad())
        using (var prefix = model.Encoder.Prefix())
            SafeTensors.Save(Path.Combine(dir, LoraAdapter.WeightsFile), new Dictionary<string, Tensor> { [PromptTuningConfig.PromptKey] = prefix.detach().cpu() },
                new Dictionary<string, string> { ["format"] = "pt" });
        var (layers, kvHeads, headDim) = PrefixTunedLM.CacheShape(model.Base);
        int tokenDim = (int)(kvHeads * headDim);
        var json = new JsonObject
        {
            ["auto_mapping"] = null,
            ["base_model_name_or_path"] = BaseModelNameOrPath,
            ["encoder_hidden_size"] = PrefixProjection ? EncoderHiddenSize ?? tokenDim : tokenDim,
            ["inference_mode"] = true,
            ["init_weights"] = null,
            ["modules_to_save"] = null,
            // PEFT's _prepare_prompt_learning_config: for grouped-query models the heads are the key/value heads.
            ["num_attention_heads"] = kvHeads,
            ["num_layers"] = layers,
            ["num_transformer_submodules"] = 1,
            ["num_virtual_tokens"] = model.VirtualTokens,
            ["peft_type"] = PeftType,
            ["prefix_projection"] = PrefixProjection,
            ["revision"] = null,
            ["task_type"] = "CAUSAL_LM",
            ["token_dim"] = tokenDim,
        };
        ConfigJson.WriteAtomically(Path.Combine(dir, LoraConfig.FileName), json.ToJsonString(ConfigJson.Options) + "\n");
    }

    /// <summary>Wraps <paramref name="model"/> with the prefix of a PREFIX_TUNING adapter folder (ours or PEFT's), as a plain (inference-mode) prefix.</summary>
    public static PrefixTunedLM Load(CausalLM model, string dir, JsonObject json)
    {
        var path = Path.Combine(dir, LoraConfig.FileName);
        PeftPromptLearning.CheckCausalDecoder(json, path);
        int n = Field(json, "num_virtual_tokens", path);
        var (layers, kvHeads, headDim) = PrefixTunedLM.CacheShape(model);
        int tokenDim = (int)(kvHeads * headDim);
        if (Field(json, "num_layers", path) != layers || Field(json, "token_dim", path) != tokenDim)
            throw new TianGongException($"{path}: num_layers {json["num_layers"]}, token_dim {json["token_dim"]}, but the model has {layers} layers and {kvHeads} key/value heads × {headDim} = {tokenDim}: the adapter was made for another base model");
        var weights = Path.Combine(dir, LoraAdapter.WeightsFile);
        if (!File.Exists(weights)) throw new TianGongException($"{dir}: no {LoraAdapter.WeightsFile}");
        using var file = SafeTensorsFile.Open(weights);
        var key = PromptTuningConfig.PromptKey;
        if (!file.Keys.Contains(key)) throw new TianGongException($"{weights}: no '{key}' tensor");
        var shape = file.GetInfo(key).Shape;
        long width = (long)layers * 2 * tokenDim;
        if (shape.Count != 2 || shape[0] != n || shape[1] != width)
            throw new TianGongException($"{weights}: '{key}' has shape [{string.Join(", ", shape)}] but the model needs [{n}, {width}]: the adapter was made for another base model");
        var encoder = new PrefixEncoder(n, layers, tokenDim, null);
        using (no_grad())
        using (var prefix = file.Read(key))
            encoder.EmbeddingWeight.copy_(prefix);
        return new PrefixTunedLM(model, encoder);
    }

    private static int Field(JsonObject json, string name, string path) =>
        json[name] is JsonValue v && v.TryGetValue<int>(out var i) ? i : throw new TianGongException($"{path}: missing or non-integer '{name}'");
}
