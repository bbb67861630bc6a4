using System.Diagnostics;
using TianGong.Models;
using static TorchSharp.torch;

namespace TianGong.Bench;

/// <summary>
/// The bare KV-cache decode loop the benchmarks time (decode speed, bandwidth bound, quantization, compression, ONNX and
/// GPU runs): a prefill of the prompt, then greedy steps straight through <c>CausalLM.forward</c>, no sampling core.
/// </summary>
internal static class GreedyDecode
{
    /// <summary>
    /// Prefills <paramref name="prompt"/> (B, P) untimed, then times <paramref name="steps"/> greedy decode steps of all B
    /// sequences together. <paramref name="synchronize"/> waits for queued device work (GPUs) before the clock is read;
    /// <paramref name="onToken"/> sees each step's (B, 1) tokens inside the timed loop.
    /// </summary>
    public static (double TokensPerSecond, double MsPerStep) Time(CausalLM model, Tensor prompt, int steps,
        Action? synchronize = null, Action<Tensor>? onToken = null)
    {
        using var _ = no_grad();
        long batch = prompt.shape[0];
        using var cache = model.CreateCache(batch, (int)prompt.shape[1] + steps + 1);
        var next = model.forward(prompt, cache)[.., -1].argmax(-1, keepdim: true);               // (B, 1)
        synchronize?.Invoke();
        var clock = Stopwatch.StartNew();
        for (int s = 0; s < steps; s++)
        {
            using var scope = NewDisposeScope();
            var token = model.forward(next, cache)[.., -1].argmax(-1, keepdim: true);
            onToken?.Invoke(token);
            next.Dispose();
            next = token.MoveToOuterDisposeScope();
        }
        synchronize?.Invoke();
        next.Dispose();
        double seconds = clock.Elapsed.TotalSeconds;
        return (batch * steps / seconds, seconds * 1000 / steps);
    }

    /// <summary>Best tokens/s of three <see cref="Time"/> runs on the same prompt.</summary>
    public static double BestOfThree(CausalLM model, Tensor prompt, int steps) =>
        Enumerable.Range(0, 3).Max(_ => Time(model, prompt, steps).TokensPerSecond);
}
