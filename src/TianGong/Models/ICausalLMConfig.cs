namespace TianGong.Models;

/// <summary>
/// What trainers, generators and checkpoint code need to know about any causal language model config,
/// whichever family's config.json it came from.
/// </summary>
public interface ICausalLMConfig
{
    /// <summary>Hugging Face's <c>model_type</c> (gpt2, llama).</summary>
    string ModelType { get; }
    /// <summary>Hugging Face's <c>architectures[0]</c> for the LM-head class.</summary>
    string Architecture { get; }
    int VocabSize { get; }
    /// <summary>The longest sequence the model accepts (learned positions or rotary tables are built for it).</summary>
    int ContextLength { get; }
    int LayerCount { get; }
    int ModelWidth { get; }
    int? BosTokenId { get; }
    int? EosTokenId { get; }
    bool TieWordEmbeddings { get; }

    /// <summary>Throws a <see cref="TianGongException"/> naming the first field that is out of range.</summary>
    void Validate();

    /// <summary>The same config with the token ids and vocabulary of a tokenizer.</summary>
    ICausalLMConfig WithTokenizer(int vocabSize, int bosTokenId, int eosTokenId);
}
