namespace TianGong.Models;

/// <summary>
/// A config whose model is a stack of identical blocks numbered in its weight keys (decoders, BERT's encoder): what
/// extraction by depth needs, whichever field name (num_hidden_layers, n_layer) the family's config.json uses.
/// </summary>
public interface ILayeredConfig : IModelConfig
{
    int LayerCount { get; }

    /// <summary>The same config with <paramref name="count"/> blocks.</summary>
    IModelConfig WithLayerCount(int count);
}
