using TianGong.Data;
using TianGong.Models;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Training;

/// <summary>Token ids (B, T) and the ids that follow them (B, T): <c>Target[b, t] = Input[b, t + 1]</c>.</summary>
public sealed record TokenBatch(Tensor Input, Tensor Target) : IDisposable
{
    public void Dispose()
    {
        Input.Dispose();
        Target.Dispose();
    }
}

/// <summary>Pretraining's batches: random windows of the token shards for training, consecutive windows for validation.</summary>
public sealed class NextTokenData(BatchSampler sampler, int batchSize, int seqLen, int evalBatches, Device device) : ITrainingData<TokenBatch>
{
    public TokenBatch TrainBatch(long index)
    {
        var (input, target) = sampler.GetBatch(index, batchSize, seqLen); // (B, T) on the CPU
        return OnDevice(input, target);
    }

    public IEnumerable<TokenBatch> ValidationBatches() =>
        sampler.GetValBatches(batchSize, seqLen, evalBatches).Select(b => OnDevice(b.Input, b.Target));

    private TokenBatch OnDevice(Tensor input, Tensor target)
    {
        if (device.type == DeviceType.CPU) return new TokenBatch(input, target);
        using (input)
        using (target)
            return new TokenBatch(input.to(device), target.to(device));
    }
}

/// <summary>The loss of causal language modelling: mean next-token cross-entropy.</summary>
public static class LanguageModeling
{
    /// <summary>
    /// The next-token loss for <see cref="Trainer{TBatch}"/> on one model, its LM head looked up once rather than every
    /// step: with a plain linear head the loss is computed block by block, without the (B·T × V) logits.
    /// </summary>
    public static LossFunction<TokenBatch> NextTokenLossFor(nn.Module model)
    {
        var head = model is CausalLM causal ? ChunkedLmHeadLoss.PlainHeadWeight(causal) : null;
        return (m, batch) => head is not null && ReferenceEquals(m, model) ? ChunkedLoss((CausalLM)m, head, batch) : FullLogitsLoss(m, batch);
    }

    /// <summary>The same loss for a model seen once (tests, benchmarks): the head is looked up on this call.</summary>
    public static LossRecord NextTokenLoss(nn.Module model, TokenBatch batch) =>
        model is CausalLM causal && ChunkedLmHeadLoss.PlainHeadWeight(causal) is { } head ? ChunkedLoss(causal, head, batch) : FullLogitsLoss(model, batch);

    private static LossRecord ChunkedLoss(CausalLM model, Tensor head, TokenBatch batch) =>
        new(ChunkedLmHeadLoss.Loss(model.Hidden(batch.Input), head, batch.Target), batch.Input.shape[0]);

    private static LossRecord FullLogitsLoss(nn.Module model, TokenBatch batch)
    {
        var logits = model switch
        {
            CausalLM lm => lm.forward(batch.Input),
            nn.Module<Tensor, Tensor> m => m.forward(batch.Input),
            _ => throw new ArgumentException($"next-token loss needs a model that maps token ids to logits, got {model.GetType().Name}", nameof(model)),
        };
        return new LossRecord(Loss(logits, batch.Target), batch.Input.shape[0]);
    }

    /// <summary>Cross-entropy of logits (B, T, V) against targets (B, T), computed in fp32 whatever the model dtype.</summary>
    public static Tensor Loss(Tensor logits, Tensor target) =>
        F.cross_entropy(logits.reshape(-1, logits.shape[^1]).to(ScalarType.Float32), target.reshape(-1));
}
