using TianGong.Checkpoints;

namespace TianGong.Inference.Offload;

/// <summary>
/// Keeps at most two streamed decoder layers' weights in memory: the one running and the next, whose pages a worker
/// thread brings in from the memory-mapped safetensors file (MADV_POPULATE_READ) while the current one computes.
/// Entering a layer releases the one before it (MADV_DONTNEED: its pages leave the process; the file and the OS
/// page cache keep them, so a model larger than RAM still runs, at the speed of reading the file).
/// </summary>
/// <remarks>
/// The weights are views of a private, never-written file mapping, so a page released while another thread still
/// reads it is simply read again from the file: a race can only cost memory or time, never change a value.
/// </remarks>
public sealed class LayerStreamer : IDisposable
{
    private readonly IReadOnlyList<int> order;                    // streamed layer indices, in forward order
    private readonly Dictionary<int, List<Tensor>> weights = [];  // layer → its mapped weight views
    private readonly Lock gate = new();
    private int? current;
    private (int Layer, Task Task)? prefetch;

    public LayerStreamer(IReadOnlyList<int> layers)
    {
        order = layers;
        foreach (var layer in layers) weights[layer] = [];
    }

    public IReadOnlyList<int> Layers => order;

    /// <summary>Registers a mapped weight view that belongs to <paramref name="layer"/>.</summary>
    public void Add(int layer, Tensor mapped) => weights[layer].Add(mapped);

    /// <summary>
    /// Called by every streamed projection before it computes: on the first call for a layer, the previous layer is
    /// released, this one is made resident (waiting for its prefetch, or populating it now) and the next one prefetched.
    /// </summary>
    public void Enter(int layer)
    {
        lock (gate)
        {
            if (current == layer) return;
            if (current is { } previous) Release(previous);
            bool ready = false;
            if (prefetch is { } pending)
            {
                pending.Task.Wait();
                prefetch = null;
                if (pending.Layer == layer) ready = true;
                else Release(pending.Layer); // entered out of order (a forward that stopped early): drop the guess
            }
            if (!ready) Populate(layer);
            current = layer;
            int next = order[(IndexOf(layer) + 1) % order.Count];
            if (next != layer) prefetch = (next, Task.Run(() => Populate(next)));
        }
    }

    private int IndexOf(int layer)
    {
        for (int i = 0; i < order.Count; i++) if (order[i] == layer) return i;
        throw new InvalidOperationException($"layer {layer} is not streamed");
    }

    private void Populate(int layer)
    {
        foreach (var w in weights[layer]) SafeTensorsFile.Populate(w);
    }

    private void Release(int layer)
    {
        foreach (var w in weights[layer]) SafeTensorsFile.Release(w);
    }

    public void Dispose()
    {
        lock (gate)
        {
            if (prefetch is { } pending) pending.Task.Wait();
            prefetch = null;
        }
    }
}
