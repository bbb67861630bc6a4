namespace TianGong.Models;

/// <summary>What every Hugging Face config.json we read has in common, whatever the architecture.</summary>
public interface IModelConfig
{
    /// <summary>Hugging Face's <c>model_type</c> (gpt2, llama, bert, t5, ...).</summary>
    string ModelType { get; }
    /// <summary>Hugging Face's <c>architectures[0]</c>: the class whose weights the folder holds.</summary>
    string Architecture { get; }
    int VocabSize { get; }

    /// <summary>Throws a <see cref="TianGongException"/> naming the first field that is out of range.</summary>
    void Validate();
}
