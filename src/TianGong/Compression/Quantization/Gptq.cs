using TianGong.Models.Layers;

namespace TianGong.Compression.Quantization;

/// <summary>
/// GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers"):
/// quantizes a layer's input columns one at a time and spreads each column's rounding error over the columns not yet
/// quantized, weighted by the inverse Hessian H = 2XᵀX of the layer's calibration inputs, so the layer's outputs on
/// those inputs move as little as possible. Chosen over AWQ because its result is exactly the GPTQ checkpoint we
/// already store (AWQ rescales channels and needs its own format or a folded scale), and its objective is the layer
/// output error itself rather than a searched proxy. As in the reference (gptq.py's fasterquant): dead inputs
/// zeroed, 1% damping of the mean diagonal, upper Cholesky factor of H⁻¹, blocks of 128 columns, group parameters
/// found at each group's first column from the partly updated weight; desc_act off. Unlike the reference's
/// layer-by-layer pass, every layer's Hessian comes from one forward pass of the float model.
/// </summary>
public static class Gptq
{
    /// <summary>Accumulates XᵀX of a linear layer's inputs while passing them through unchanged.</summary>
    private sealed class HessianCapture : LinearWrapper
    {
        public Tensor Sum;
        public long Rows;

        public HessianCapture(LinearParts original) : base(nameof(HessianCapture), original)
        {
            Sum = zeros(original.InFeatures, original.InFeatures, ScalarType.Float64);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x)
        {
            using (NewDisposeScope())
            {
                var flat = x.detach().reshape(-1, x.shape[^1]).to(ScalarType.Float64);
                Sum.add_(flat.t().matmul(flat));
                Rows += flat.shape[0];
            }
            return BaseForward(x);
        }
    }

    /// <summary>
    /// Quantizes the layers <paramref name="selector"/> picks (default all-linear) with GPTQ, their Hessians measured
    /// by running <paramref name="runCalibration"/> (the model on calibration batches) once. Returns the quantized names.
    /// </summary>
    public static IReadOnlyList<string> Quantize(nn.Module model, GptqConfig config, Action runCalibration, LayerSelector? selector = null)
    {
        config.Validate();
        var captures = new Dictionary<string, HessianCapture>();
        var names = LayerReplacement.Replace(model, selector ?? new LayerSelector([LayerSelector.AllLinear]), (name, parts) =>
        {
            if (parts.InFeatures % config.PackFactor != 0 || parts.OutFeatures % config.PackFactor != 0)
                throw new TianGongException($"{name}: a {parts.InFeatures}→{parts.OutFeatures} layer cannot be packed {config.PackFactor} to an int32");
            return captures[name] = new HessianCapture(parts);
        });
        using (no_grad()) runCalibration();
        using var _ = no_grad();
        LayerReplacement.Replace(model, LayerSelector.Exactly(names), (name, parts) =>
        {
            var capture = captures[name];
            if (capture.Rows == 0) throw new TianGongException($"{name}: the calibration data never reached this layer");
            QuantizedWeight quantized;
            using (NewDisposeScope())
            {
                var h = (capture.Sum * (2.0 / capture.Rows)).to(ScalarType.Float32);
                var w = (parts.FanInFanOut ? parts.Weight.t() : parts.Weight).detach().to(ScalarType.Float32).contiguous();
                quantized = QuantizeLayer(w, h, config);
            }
            capture.Sum.Dispose();
            return QuantizedLinear.FromWeight(parts, quantized);
        });
        return names;
    }

    /// <summary>GPTQ for one weight (out, in) given H (in, in).</summary>
    public static QuantizedWeight QuantizeLayer(Tensor weight, Tensor hessian, GptqConfig config, double dampPercent = 0.01, int blockSize = 128)
    {
        using var scope = NewDisposeScope();
        int rows = (int)weight.shape[0], columns = (int)weight.shape[1];
        int groupSize = config.GroupSizeFor(columns), maxq = config.MaxQ;
        int groups = (int)GptqPacking.GroupCount(columns, groupSize);
        var w = weight.clone();
        var h = hessian.clone();
        var dead = h.diag().eq(0);
        h.diagonal().masked_fill_(dead, 1);          // an input that is always zero: keep H invertible...
        w.masked_fill_(dead.unsqueeze(0), 0);        // ...and its weights do not matter
        var damp = dampPercent * h.diag().mean().item<float>();
        h.diagonal().add_(damp);
        var hinv = UpperCholeskyOfInverse(h);

        var scales = new Half[groups * rows];
        var zeros = new int[groups * rows];
        var q = new int[columns * rows];             // (in, out)
        float[] scale = new float[rows];
        int[] zero = new int[rows];
        if (config.GroupSize == -1) FindParams(w, 0, columns, 0);

        for (int i1 = 0; i1 < columns; i1 += blockSize)
        {
            int i2 = Math.Min(i1 + blockSize, columns), count = i2 - i1;
            var w1 = w[.., i1..i2].clone();
            var err1 = torch.zeros(rows, count);
            var hinv1 = hinv[i1..i2, i1..i2];
            for (int i = 0; i < count; i++)
            {
                int column = i1 + i;
                if (config.GroupSize != -1 && column % groupSize == 0) FindParams(w, column, Math.Min(columns, column + groupSize), column / groupSize);
                var col = w1[.., i].contiguous().data<float>().ToArray();
                var dequantized = new float[rows];
                for (int r = 0; r < rows; r++)
                {
                    int value = Math.Clamp((int)MathF.Round(col[r] / scale[r], MidpointRounding.ToEven) + zero[r], 0, maxq);
                    q[column * rows + r] = value;
                    dequantized[r] = scale[r] * (value - zero[r]);
                }
                using var inner = NewDisposeScope();
                float d = hinv1[i, i].item<float>();
                var err = (w1[.., i] - tensor(dequantized)) / d;                               // (out)
                w1[.., i..] -= err.unsqueeze(1).matmul(hinv1[i, i..].unsqueeze(0));
                err1[.., i] = err;
            }
            if (i2 < columns) w[.., i2..] -= err1.matmul(hinv[i1..i2, i2..]);
        }
        return new QuantizedWeight(columns, rows, config,
            GptqPacking.PackWeight(q, columns, rows, config.Bits),
            GptqPacking.PackZeros(zeros, groups, rows, config.Bits),
            scales, GptqPacking.GroupIndex(columns, groupSize));

        // Upper Cholesky factor of H⁻¹, in float64: in float32 the inverse of a large, badly conditioned H (688
        // inputs, a few thousand calibration rows) lost positive-definiteness.
        static Tensor UpperCholeskyOfInverse(Tensor h)
        {
            try
            {
                var h64 = h.to(ScalarType.Float64);
                return linalg.cholesky(linalg.inv(h64)).t().to(ScalarType.Float32).contiguous();
            }
            catch (System.Runtime.InteropServices.ExternalException)
            {
                throw new TianGongException("GPTQ: the calibration Hessian is not positive definite even with 1% damping; give more calibration text");
            }
        }

        // The quantizer's scale and zero per output for columns [start, end), from the weight as updated so far.
        void FindParams(Tensor current, int start, int end, int group)
        {
            var block = current[.., start..end].contiguous().data<float>().ToArray();
            int width = end - start;
            for (int r = 0; r < rows; r++)
            {
                var (s, z) = QuantizedWeight.ScaleAndZero(block.AsSpan(r * width, width), maxq, config.Sym);
                (scale[r], zero[r]) = ((float)s, z);
                scales[group * rows + r] = s;
                zeros[group * rows + r] = z;
            }
        }
    }
}
