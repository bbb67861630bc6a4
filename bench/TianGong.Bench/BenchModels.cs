using TianGong.Models;
using TianGong.Training;
using static TorchSharp.torch;

namespace TianGong.Bench;

/// <summary>The models the decode benches time, built one way.</summary>
internal static class BenchModels
{
    /// <summary>A pretraining config's model at poetry-small's vocabulary (16,384), random weights from seed 0, in eval mode.</summary>
    public static CausalLM RandomDecoder(string configPath)
    {
        var config = PretrainConfig.Load(configPath).Model.WithTokenizer(16384, 0, 0);
        manual_seed(0);
        var model = ModelConfigs.CreateCausalLM(config);
        model.InitializeWeights();
        model.eval();
        return model;
    }
}
