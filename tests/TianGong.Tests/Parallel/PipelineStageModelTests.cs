using TianGong.Parallelism.Pipeline;

namespace TianGong.Tests.Parallel;

/// <summary>
/// A pipeline rank's model (<see cref="PipelineStageModel"/>) in one process: only its stage's parameters stay in memory,
/// the stage computes what the whole model computes, and inside WholeState the state dict is the whole model's again,
/// so a checkpoint loads into it and the other stages are freed when the scope closes.
/// </summary>
[Collection(nameof(Training.GlobalRandomState))]
public class PipelineStageModelTests
{
    [Theory]
    [MemberData(nameof(TestModels.BothFamilies), MemberType = typeof(TestModels))]
    public void A_stage_keeps_only_its_parameters_computes_the_same_and_loads_a_whole_checkpoint(string family)
    {
        using var whole = TestModels.Create(family);
        using var lm = TestModels.Create(family); // the same seed: the same weights, as every rank builds them
        var ranges = PipelineStage.Partition(whole, 2);
        var kept = PipelineStage.ParametersOf(lm, 1, 2, ranges[1]);
        var held = new PipelineStageModel(lm, kept);

        long keptBytes = kept.Sum(p => p.numel() * p.element_size());
        Assert.Equal(whole.parameters().Sum(p => p.numel() * p.element_size()), held.WholeBytes);
        Assert.Equal(keptBytes, held.ParameterBytes);
        Assert.True(keptBytes < held.WholeBytes * 0.8, $"stage 1 holds {keptBytes} of {held.WholeBytes} bytes");
        Assert.Equal(whole.parameters().Count(), lm.parameters().Count()); // every parameter keeps its place and name,
        Assert.Contains(lm.parameters(), p => p.numel() == 0);            // but the first stage's layers hold no elements

        // The last stage on the first stage's hidden states (computed on the whole model) gives the whole model's logits.
        using var ids = randint(0, 64, [2, 12]);
        using var first = new PipelineStage(whole, 0, 2, ranges[0]);
        using var last = new PipelineStage(lm, 1, 2, ranges[1]);
        using var hidden = first.Forward(ids);
        using var expected = whole.forward(ids);
        using var actual = last.Forward(hidden);
        Assert.Equal(0.0, (expected - actual).abs().max().item<float>());

        Assert.Throws<InvalidOperationException>(() => held.state_dict()); // outside WholeState a stage is never saved as a model
        var source = whole.state_dict();
        using (var _ = no_grad())
            foreach (var t in source.Values) t.mul_(2); // a checkpoint with other weights
        using (held.WholeState())
        {
            var state = held.state_dict();
            Assert.Equal(source.Keys.Order(), state.Keys.Order());
            using var _ = no_grad();
            foreach (var (name, t) in state)
            {
                Assert.Equal(source[name].shape, t.shape);
                t.copy_(source[name]); // what TrainingCheckpoint.LoadLatest does
            }
        }
        Assert.Equal(keptBytes, held.ParameterBytes); // the other stages freed again
        var loaded = held.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var p in kept)
        {
            var name = loaded.First(l => ReferenceEquals(l.Value, p)).Key;
            Assert.Equal(0.0, (source[name] - p).abs().max().item<float>());
        }
    }
}
