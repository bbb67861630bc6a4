using F = TorchSharp.torch.nn.functional;

namespace TianGong.Vision;

/// <summary>
/// The weighted k-nearest-neighbour classifier self-supervised papers report beside the linear probe (Wu et al.
/// 2018, "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", eq. 8): a test image's class
/// scores are Σ over its k most cosine-similar training features of exp(s / τ) for the neighbour's class.
/// </summary>
public static class KnnClassifier
{
    /// <summary>Predicted class (Q) for each query (Q, D) against the bank (N, D) with labels (N); ties go to the lower class id.</summary>
    public static Tensor Predict(Tensor bank, Tensor bankLabels, Tensor queries, int k, double temperature, int classes, int chunk = 256)
    {
        if (k <= 0 || k > bank.shape[0]) throw new TianGongException($"--knn: k must be in 1..{bank.shape[0]}, got {k}");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var keys = F.normalize(bank, dim: 1).t();                                           // (D, N)
        var labels = bankLabels.to(ScalarType.Int64);
        var predictions = new List<Tensor>();
        // In chunks of queries: the full (Q, N) similarity matrix of Fashion-MNIST would be 2.4 GB.
        for (long start = 0; start < queries.shape[0]; start += chunk)
        {
            using var inner = NewDisposeScope();
            var q = F.normalize(queries.narrow(0, start, Math.Min(chunk, queries.shape[0] - start)), dim: 1);
            var (similarity, index) = q.matmul(keys).topk(k, dim: 1);                        // (q, k)
            var votes = zeros(q.shape[0], classes).scatter_add(1, labels.take(index), (similarity / temperature).exp());
            predictions.Add(votes.argmax(1).MoveToOuterDisposeScope());
        }
        return cat(predictions, 0).MoveToOuterDisposeScope();
    }

    /// <summary>Top-1 accuracy of <see cref="Predict"/> on labelled queries.</summary>
    public static double Accuracy(Tensor bank, Tensor bankLabels, Tensor queries, Tensor queryLabels, int k, double temperature, int classes)
    {
        using var predicted = Predict(bank, bankLabels, queries, k, temperature, classes);
        using var correct = predicted.eq(queryLabels.to(ScalarType.Int64)).to(ScalarType.Float32).mean();
        return correct.item<float>();
    }
}
