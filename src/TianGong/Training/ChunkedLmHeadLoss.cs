using TianGong.Models;
using TorchSharp.Modules;
using F = TorchSharp.torch.nn.functional;

namespace TianGong.Training;

/// <summary>
/// Next-token cross-entropy through a plain linear LM head (logits = hidden · Wᵀ, tied or not), computed a block of rows
/// at a time so that the (B·T × V) logits, their softmax and their gradient are never materialised whole: with a 16k
/// vocabulary they are the largest tensors of a training step. The forward pass also computes the gradients of the
/// hidden states and of W (softmax − one-hot, times the block), so backward only scales them: the same three matmuls as
/// the plain path, without its full-size temporaries (as Liger's fused linear cross-entropy does on GPUs).
/// </summary>
public static class ChunkedLmHeadLoss
{
    /// <summary>
    /// Rows per block: about 16M logits (64 MB in fp32), whatever the vocabulary. Each block also reads and writes the whole
    /// (V, C) gradient of W once, so blocks much smaller than this trade the logits' memory for that traffic.
    /// </summary>
    public static int RowsPerChunk(long vocab) => (int)Math.Clamp((16L << 20) / vocab, 16, 8192);

    /// <summary>
    /// The LM head's weight (V, C) when the head is exactly <c>F.linear(hidden, W)</c> with W a parameter of the model,
    /// else null (a bias, an adapter, a quantized or otherwise wrapped head): the caller then takes the plain path.
    /// Checked on a fixed probe (no random draw, so the training RNG stream is untouched).
    /// </summary>
    public static Parameter? PlainHeadWeight(CausalLM model)
    {
        var parameters = model.named_parameters().ToList();
        if (parameters.Any(p => p.name.StartsWith("lm_head.", StringComparison.Ordinal) && p.name != "lm_head.weight")) return null;
        long vocab = model.Config.VocabSize;
        var candidate = parameters.FirstOrDefault(p => p.name == "lm_head.weight").parameter
            ?? parameters.FirstOrDefault(p => p.parameter.dim() == 2 && p.parameter.shape[0] == vocab
                && (p.name.EndsWith("embed_tokens.weight", StringComparison.Ordinal) || p.name.EndsWith("wte.weight", StringComparison.Ordinal))).parameter;
        // A weight that cannot multiply the model's hidden states (another width, integers) is not the head's.
        if (candidate is null || candidate.dim() != 2 || !candidate.is_floating_point() || candidate.shape[1] != model.Config.ModelWidth) return null;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        // The probe is what the model's own forward hands its head (hidden states of the model's width, in the weights'
        // dtype), so any head the model runs takes it: a failure here (out of memory, a device error) is a real one and propagates.
        var probe = sin(arange(candidate.shape[1], dtype: ScalarType.Float32, device: candidate.device) * 0.37f).to(candidate.dtype).view(1, 1, -1); // (1, 1, C)
        var head = model.LmHead(probe);
        var expected = F.linear(probe, candidate);
        return head.shape.SequenceEqual(expected.shape) && head.allclose(expected, rtol: 1e-5, atol: 1e-6) ? candidate : null;
    }

    /// <summary>
    /// Mean cross-entropy (fp32) of logits = hidden · Wᵀ against <paramref name="target"/>, rows with target
    /// <paramref name="ignoreIndex"/> left out, as <c>F.cross_entropy</c> computes it; differentiable in hidden and W.
    /// </summary>
    /// <param name="hidden">(N, C) or (B, T, C) hidden states after the final norm.</param>
    /// <param name="weight">(V, C) the LM head's weight.</param>
    /// <param name="target">(N) or (B, T) token ids.</param>
    /// <param name="rowsPerChunk">Rows per block; null: <see cref="RowsPerChunk"/>.</param>
    public static Tensor Loss(Tensor hidden, Tensor weight, Tensor target, long ignoreIndex = -100, int? rowsPerChunk = null)
    {
        var flatHidden = hidden.reshape(-1, hidden.shape[^1]);                                   // (N, C)
        var flatTarget = target.reshape(-1);                                                      // (N)
        int rows = rowsPerChunk ?? RowsPerChunk(weight.shape[0]);
        bool needGrad = is_grad_enabled() && (hidden.requires_grad || weight.requires_grad);
        if (!needGrad)
        {
            using var _ = no_grad();
            return LinearCrossEntropy.Compute(flatHidden, weight, flatTarget, rows, ignoreIndex, gradients: false).Loss;
        }
        return LinearCrossEntropy.apply(flatHidden, weight, flatTarget, rows, ignoreIndex);
    }

    /// <summary>The autograd function: forward computes the loss and both gradients block by block; backward scales them.</summary>
    private sealed class LinearCrossEntropy : autograd.SingleTensorFunction<LinearCrossEntropy>
    {
        public override string Name => nameof(LinearCrossEntropy);

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var (hidden, weight, target) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2]);
            var (loss, gradHidden, gradWeight) = Compute(hidden, weight, target, (int)vars[3], (long)vars[4], gradients: true);
            ctx.save_for_backward([gradHidden!, gradWeight!]);
            return loss;
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            var saved = ctx.get_saved_variables();
            var scale = gradOutput.to(saved[0].dtype);                                            // a scalar: d(outer loss)/d(this loss)
            return [saved[0] * scale, saved[1] * scale.to(saved[1].dtype), null!, null!, null!];
        }

        /// <summary>Loss (fp32 scalar) and, when asked, its gradients (N, C) and (V, C) in the dtypes of hidden and W.</summary>
        public static (Tensor Loss, Tensor? GradHidden, Tensor? GradWeight) Compute(Tensor hidden, Tensor weight, Tensor target, int rows, long ignoreIndex, bool gradients)
        {
            long n = hidden.shape[0];
            var valid = target.ne(ignoreIndex);                                                   // (N)
            long count = valid.sum().item<long>();
            var safeTarget = target.masked_fill(valid.logical_not(), 0);
            var lossSum = zeros(1, ScalarType.Float32, hidden.device);
            var gradHidden = gradients ? empty_like(hidden) : null;
            Tensor? gradWeight = null;                                                            // (V, C), from the first block on
            double inverseCount = count == 0 ? 0 : 1.0 / count;
            for (long start = 0; start < n; start += rows)
            {
                using var scope = NewDisposeScope();
                long m = Math.Min(rows, n - start);
                var h = hidden.narrow(0, start, m);                                               // (M, C)
                var t = safeTarget.narrow(0, start, m).unsqueeze(1);                              // (M, 1)
                var keep = valid.narrow(0, start, m);                                             // (M)
                // log_softmax is one fused kernel (logsumexp through ops is several passes with temporaries), and
                // −log_softmax[target] is what F.cross_entropy computes.
                var logProbs = F.linear(h, weight).to(ScalarType.Float32).log_softmax(1);         // (M, V) fp32, as the plain path's loss
                lossSum.sub_((logProbs.gather(1, t).squeeze(1) * keep).sum());
                if (!gradients) continue;
                // d loss / d logits = (softmax − one-hot) · s per row, s = 1/count on kept rows and 0 on ignored ones. The row
                // scale is applied to the (M, C) factors, not to the (M, V) block: one pass over the block fewer.
                var probs = logProbs.exp_();                                                      // (M, V), in place
                probs.scatter_add_(1, t, full([m, 1], -1f, ScalarType.Float32, hidden.device));
                var d = probs.to(weight.dtype);
                var rowScale = (keep.to(ScalarType.Float32) * inverseCount).unsqueeze(1).to(weight.dtype); // (M, 1)
                gradHidden!.narrow(0, start, m).copy_(d.mm(weight).mul_(rowScale));                // (M, C)
                var scaledRows = h.to(weight.dtype) * rowScale;                                   // (M, C)
                if (gradWeight is null) gradWeight = d.t().mm(scaledRows).MoveToOuterDisposeScope(); // (V, C)
                else gradWeight.addmm_(d.t(), scaledRows);
            }
            var loss = (lossSum * inverseCount).squeeze(0);
            if (count == 0) loss = full([], float.NaN, ScalarType.Float32, hidden.device);       // as F.cross_entropy: mean over nothing
            if (gradients) gradWeight ??= zeros_like(weight);                                    // no rows at all
            return (loss, gradHidden, gradWeight);
        }
    }
}
