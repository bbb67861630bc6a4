using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Models;
using TianGong.Models.Layers;
using TianGong.Tokenizers;
using TorchSharp.Modules;

namespace TianGong.Tuning;

/// <summary>
/// Prompt tuning (Lester et al. 2021): a trainable soft prompt of <c>n</c> virtual token embeddings put before every
/// input, the base model frozen. It is a <see cref="CausalLM"/> itself, so the trainer, generator, scorer and server
/// take it as any model: the first call of a sequence (empty cache) gets the prompt in front of its embeddings, the
/// attention mask and positions are shifted by n on every call, and the logits of the virtual tokens are dropped.
/// State-dict keys: <c>base_model.*</c> and <c>prompt_embeddings</c> (n, C), PEFT's saved name.
/// </summary>
public sealed class PromptTunedLM : CausalLM
{
    private readonly CausalLM base_model;
    private readonly Parameter prompt_embeddings;

    /// <param name="prompt">(n, C) initial virtual token embeddings; n may be 0 (then the model is the base model).</param>
    public PromptTunedLM(CausalLM baseModel, Tensor prompt) : base(nameof(PromptTunedLM))
    {
        if (prompt.dim() != 2 || prompt.shape[1] != baseModel.Config.ModelWidth)
            throw new TianGongException($"soft prompt: expected shape [n, {baseModel.Config.ModelWidth}], got [{string.Join(", ", prompt.shape)}]");
        base_model = baseModel;
        var first = baseModel.parameters().First();
        prompt_embeddings = new Parameter(prompt.detach().to(first.dtype, first.device).clone());
        RegisterComponents();
    }

    public CausalLM Base => base_model;

    public Parameter Prompt => prompt_embeddings;

    public int VirtualTokens => (int)prompt_embeddings.shape[0];

    public override ICausalLMConfig Config => base_model.Config;

    /// <summary>The base trunk on the shifted call; the virtual tokens' hidden states are dropped before anyone sees them.</summary>
    protected internal override TrunkOutput Trunk(DecoderInput input)
    {
        using var scope = NewDisposeScope();
        var (shifted, first) = Shift(input);
        var trunk = base_model.Trunk(shifted);
        int n = first ? VirtualTokens : 0;
        Tensor Real(Tensor h) => h.narrow(1, n, h.shape[1] - n);
        var hidden = trunk.HiddenStates?.Select(Real).ToList();
        return new TrunkOutput(Real(trunk.LastHiddenState), hidden, trunk.AuxLoss).MoveToOuterDisposeScope();
    }

    protected internal override Tensor LmHead(Tensor hidden) => base_model.LmHead(hidden);

    public override Tensor EmbedTokens(Tensor inputIds) => base_model.EmbedTokens(inputIds);

    /// <summary>The virtual tokens occupy the first n cache slots of every row.</summary>
    public override KvCache CreateCache(long batch, int maxLength) => base_model.CreateCache(batch, maxLength + VirtualTokens);

    public override void InitializeWeights(torch.Generator? generator = null) => base_model.InitializeWeights(generator);

    /// <summary>The call the base model sees: embeddings with the prompt in front (first call), mask and positions shifted by n.</summary>
    private (DecoderInput Input, bool First) Shift(DecoderInput input)
    {
        var (b, _) = input.Shape();
        int n = VirtualTokens;
        bool first = input.Cache is null || input.Cache.Length == 0;
        var device = prompt_embeddings.device;
        Tensor? mask = input.AttentionMask is { } m ? cat([ones(b, n, m.dtype, m.device), m], 1) : null;
        Tensor? positions = input.PositionIds is { } p
            ? first ? cat([arange(n, dtype: p.dtype, device: p.device).unsqueeze(0).expand(b, n), p + n], 1) : p + n
            : null;
        if (!first) return (input with { AttentionMask = mask, PositionIds = positions }, false);
        var embeds = input.InputsEmbeds ?? base_model.EmbedTokens(input.InputIds!.to(device));   // (B, T, C)
        var prompt = prompt_embeddings.to(embeds.dtype).unsqueeze(0).expand(b, n, prompt_embeddings.shape[1]);
        return (input with { InputIds = null, InputsEmbeds = cat([prompt, embeds], 1), AttentionMask = mask, PositionIds = positions }, true);
    }
}

/// <param name="Init">PEFT's prompt_tuning_init: TEXT (the embeddings of <paramref name="InitText"/>, repeated to n) or SAMPLE_VOCAB (embeddings of random vocabulary tokens).</param>
public sealed record PromptTuningConfig(int NumVirtualTokens, string Init = "SAMPLE_VOCAB", string? InitText = null, string? BaseModelNameOrPath = null)
{
    public const string PeftType = "PROMPT_TUNING";
    public const string PromptKey = "prompt_embeddings";

    /// <summary>A soft prompt for <paramref name="model"/> initialised as the config says (random draws from torch's seeded generator).</summary>
    public PromptTunedLM Create(CausalLM model, ITextTokenizer? tokenizer)
    {
        Models.ConfigChecks.InRange("--virtual-tokens", NumVirtualTokens, 1, model.Config.ContextLength - 1);
        long[] ids;
        if (Init == "TEXT")
        {
            if (tokenizer is null || string.IsNullOrEmpty(InitText)) throw new TianGongException("--prompt-init: initialising from text needs the text and the model's tokenizer");
            var textIds = tokenizer.Encode(InitText);
            if (textIds.Length == 0) throw new TianGongException($"--prompt-init: '{InitText}' encodes to no tokens");
            ids = Enumerable.Range(0, NumVirtualTokens).Select(i => (long)textIds[i % textIds.Length]).ToArray();
        }
        else
        {
            using var drawn = randint(0, model.Config.VocabSize, [NumVirtualTokens], dtype: ScalarType.Int64);
            ids = drawn.data<long>().ToArray();
        }
        using var _ = no_grad();
        var device = model.parameters().First().device;
        using var idTensor = tensor(ids, device: device).unsqueeze(0);
        using var init = model.EmbedTokens(idTensor).squeeze(0);
        return new PromptTunedLM(model, init);
    }

    /// <summary>adapter_config.json + adapter_model.safetensors (<c>prompt_embeddings</c>, (n, C)) as PEFT saves PROMPT_TUNING.</summary>
    public void Save(PromptTunedLM model, string dir)
    {
        Directory.CreateDirectory(dir);
        using (no_grad())
            SafeTensors.Save(Path.Combine(dir, LoraAdapter.WeightsFile), new Dictionary<string, Tensor> { [PromptKey] = model.Prompt.detach().cpu() },
                new Dictionary<string, string> { ["format"] = "pt" });
        var c = model.Config;
        var json = new JsonObject
        {
            ["base_model_name_or_path"] = BaseModelNameOrPath,
            ["inference_mode"] = true,
            ["num_attention_heads"] = null,
            ["num_layers"] = c.LayerCount,
            ["num_transformer_submodules"] = 1,
            ["num_virtual_tokens"] = model.VirtualTokens,
            ["peft_type"] = PeftType,
            ["prompt_tuning_init"] = Init,
            ["prompt_tuning_init_text"] = InitText,
            ["revision"] = null,
            ["task_type"] = "CAUSAL_LM",
            ["token_dim"] = c.ModelWidth,
            ["tokenizer_kwargs"] = null,
            ["tokenizer_name_or_path"] = Init == "TEXT" ? BaseModelNameOrPath : null,
        };
        ConfigJson.WriteAtomically(Path.Combine(dir, LoraConfig.FileName), json.ToJsonString(ConfigJson.Options) + "\n");
    }

    /// <summary>Wraps <paramref name="model"/> with the soft prompt of a PROMPT_TUNING adapter folder (ours or PEFT's).</summary>
    public static PromptTunedLM Load(CausalLM model, string dir, JsonObject json)
    {
        var path = Path.Combine(dir, LoraConfig.FileName);
        PeftPromptLearning.CheckCausalDecoder(json, path);
        int n = json["num_virtual_tokens"] is JsonValue nv && nv.TryGetValue<int>(out var nn) ? nn : throw new TianGongException($"{path}: missing 'num_virtual_tokens'");
        var weights = Path.Combine(dir, LoraAdapter.WeightsFile);
        if (!File.Exists(weights)) throw new TianGongException($"{dir}: no {LoraAdapter.WeightsFile}");
        using var file = SafeTensorsFile.Open(weights);
        if (!file.Keys.Contains(PromptKey)) throw new TianGongException($"{weights}: no '{PromptKey}' tensor");
        var shape = file.GetInfo(PromptKey).Shape;
        if (shape.Count != 2 || shape[0] != n || shape[1] != model.Config.ModelWidth)
            throw new TianGongException($"{weights}: '{PromptKey}' has shape [{string.Join(", ", shape)}] but the model needs [{n}, {model.Config.ModelWidth}] (token_dim {model.Config.ModelWidth}): the adapter was made for another base model");
        using var prompt = file.Read(PromptKey);
        return new PromptTunedLM(model, prompt);
    }
}
