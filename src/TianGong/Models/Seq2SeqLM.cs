using TianGong.Models.Layers;

namespace TianGong.Models;

/// <summary>
/// An encoder-decoder language model (T5): source ids (B, S) are encoded once, then the decoder turns target ids
/// (B, T) into next-token logits (B, T, vocab) while attending to the encoder output. The contract generators use,
/// so they never ask which family they hold.
/// </summary>
public abstract class Seq2SeqLM : nn.Module<Tensor, Tensor, Tensor>
{
    protected Seq2SeqLM(string name) : base(name) { }

    public abstract IModelConfig Config { get; }

    /// <summary>The id the decoder starts from (HF's decoder_start_token_id).</summary>
    public abstract int DecoderStartTokenId { get; }

    public abstract int? EosTokenId { get; }

    public abstract int? PadTokenId { get; }

    /// <summary>Encoder hidden states (B, S, C). attentionMask (B, S): 1 for tokens, 0 for padding.</summary>
    public abstract Tensor Encode(Tensor inputIds, Tensor? attentionMask = null);

    /// <summary>
    /// Logits (B, T, V) for decoder ids attending to <paramref name="encoderHidden"/>. With a cache, the ids continue the
    /// cached decoder sequence (positions start at cache.Length) and the cache grows by T.
    /// </summary>
    public abstract Tensor Decode(Tensor decoderInputIds, Tensor encoderHidden, Tensor? attentionMask = null, EncoderDecoderCache? cache = null);

    /// <summary>A decoder cache for <paramref name="batch"/> sequences of up to <paramref name="maxLength"/> decoder tokens.</summary>
    public abstract EncoderDecoderCache CreateCache(long batch, int maxLength);

    /// <summary>Logits (B, T, V) of a full pass: encode the source, decode the target without a cache.</summary>
    public Tensor forward(Tensor inputIds, Tensor? attentionMask, Tensor decoderInputIds)
    {
        using var scope = NewDisposeScope();
        var encoded = Encode(inputIds, attentionMask);
        return Decode(decoderInputIds, encoded, attentionMask).MoveToOuterDisposeScope();
    }

    public override Tensor forward(Tensor inputIds, Tensor decoderInputIds) => forward(inputIds, null, decoderInputIds);

    /// <summary>Where the weights live: inputs (token ids, masks) are created there.</summary>
    public Device ModelDevice => parameters().First().device;
    protected ScalarType ModelDType => parameters().First().dtype;
}
