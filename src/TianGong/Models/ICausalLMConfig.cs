namespace TianGong.Models;

/// <summary>
/// What trainers, generators and checkpoint code need to know about any causal language model config,
/// whichever family's config.json it came from.
/// </summary>
public interface ICausalLMConfig : IModelConfig
{
    /// <summary>The longest sequence the model accepts (learned positions or rotary tables are built for it).</summary>
    int ContextLength { get; }
    int LayerCount { get; }
    int ModelWidth { get; }
    int? BosTokenId { get; }
    int? EosTokenId { get; }
    bool TieWordEmbeddings { get; }

    /// <summary>The same config with the token ids and vocabulary of a tokenizer.</summary>
    ICausalLMConfig WithTokenizer(int vocabSize, int bosTokenId, int eosTokenId);
}
