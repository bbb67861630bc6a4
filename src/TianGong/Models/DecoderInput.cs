using TianGong.Models.Layers;

namespace TianGong.Models;

/// <summary>
/// One forward call of a decoder, with transformers' argument names: token ids or their embeddings (prompt tuning,
/// vision and image-text models feed embeddings), an optional padding mask and positions, and the KV cache to read
/// and grow.
/// </summary>
public sealed record DecoderInput
{
    /// <summary>(B, T) token ids; exactly one of this and <see cref="InputsEmbeds"/>.</summary>
    public Tensor? InputIds { get; init; }

    /// <summary>(B, T, C) input embeddings, used as the token embeddings would be (GPT-2 still adds its learned positions).</summary>
    public Tensor? InputsEmbeds { get; init; }

    /// <summary>(B, S) 1 for tokens, 0 for padding, over every key slot: those already cached and the T new ones.</summary>
    public Tensor? AttentionMask { get; init; }

    /// <summary>(B, T) positions of the new tokens; default: their cache slots (0..T−1 without a cache).</summary>
    public Tensor? PositionIds { get; init; }

    /// <summary>Keys and values of earlier calls; the new tokens continue them and are appended.</summary>
    public KvCache? Cache { get; init; }

    /// <summary>Return every layer's hidden states (transformers' output_hidden_states).</summary>
    public bool OutputHiddenStates { get; init; }

    public static DecoderInput Ids(Tensor inputIds, KvCache? cache = null) => new() { InputIds = inputIds, Cache = cache };

    /// <summary>(B, T): the batch and length of the new tokens, after checking that exactly one input is given.</summary>
    public (long Batch, long Length) Shape()
    {
        if ((InputIds is null) == (InputsEmbeds is null))
            throw new TianGongException("decoder input: give exactly one of input_ids and inputs_embeds");
        if (InputIds is { } ids && ids.dim() != 2) throw new TianGongException($"input_ids: expected (batch, length), got [{string.Join(", ", ids.shape)}]");
        if (InputsEmbeds is { } e && e.dim() != 3) throw new TianGongException($"inputs_embeds: expected (batch, length, hidden), got [{string.Join(", ", e.shape)}]");
        var x = InputIds ?? InputsEmbeds!;
        return (x.shape[0], x.shape[1]);
    }
}

/// <summary>
/// What a decoder returns: logits (B, T, V); with <see cref="DecoderInput.OutputHiddenStates"/>, the hidden states as
/// transformers orders them (the embeddings, each layer's output, the last one after the final norm); and an auxiliary
/// loss for models that have one (mixture-of-experts load balancing), to be added to the training loss.
/// </summary>
public sealed record DecoderOutput(Tensor Logits, IReadOnlyList<Tensor>? HiddenStates = null, Tensor? AuxLoss = null) : IDisposable
{
    public void Dispose()
    {
        Logits.Dispose();
        foreach (var h in HiddenStates ?? []) h.Dispose();
        AuxLoss?.Dispose();
    }
}

/// <summary>
/// A decoder trunk's result: the last hidden state (after the final norm), all of them when asked, and the auxiliary
/// loss of families that have one (mixture-of-experts load balancing).
/// </summary>
public sealed record TrunkOutput(Tensor LastHiddenState, IReadOnlyList<Tensor>? HiddenStates, Tensor? AuxLoss = null)
{
    /// <summary>Moves every tensor out of the caller's dispose scope (the trunk runs inside one).</summary>
    public TrunkOutput MoveToOuterDisposeScope()
    {
        LastHiddenState.MoveToOuterDisposeScope();
        foreach (var h in HiddenStates ?? []) h.MoveToOuterDisposeScope();
        AuxLoss?.MoveToOuterDisposeScope();
        return this;
    }
}
