using TianGong.Models;
using TianGong.Models.ResNet;
using TianGong.Models.Vit;
using TianGong.Vision;

namespace TianGong.Tests.Vision;

/// <summary>The pieces put together on tiny 28×28 greyscale models: gradients reach every level and the losses go down.</summary>
// Runs seed torch's global generator: tests that draw from it in parallel would change these runs' numbers.
[Collection(nameof(TianGong.Tests.Training.GlobalRandomState))]
public class ContrastiveTrainingTests
{
    private static ResNetModel TinyResNet()
    {
        manual_seed(11);
        var model = new ResNetModel(new ResNetConfig(NumChannels: 1, EmbeddingSize: 8, HiddenSizes: [8, 16], Depths: [1, 1], LayerType: "basic"));
        model.InitializeWeights();
        return model;
    }

    private static Tensor Images()
    {
        manual_seed(12);
        // Eight images: four bright squares at different places on noise, so views of one image share structure.
        var images = rand(8, 1, 28, 28) * 0.3;
        for (int i = 0; i < 8; i++) images[i, 0, (2 * i)..(2 * i + 10), (20 - 2 * i)..(28 - 2 * i)] = tensor(1f);
        return images;
    }

    [Fact]
    public void Hidden_states_are_the_levels_of_the_hierarchy()
    {
        using var resnet = TinyResNet();
        resnet.eval();
        using var _ = no_grad();
        using var pixels = rand(2, 1, 28, 28);
        var states = resnet.HiddenStates(pixels);
        Assert.Equal([new long[] { 2, 8, 7, 7 }, [2, 8, 7, 7], [2, 16, 4, 4]], states.Select(s => s.shape));
        using var output = resnet.EncodeImages(pixels);
        Assert.Equal(0f, (states[^1] - output.LastHiddenState).abs().max().item<float>());

        using var vit = new ViTModel(new ViTConfig(HiddenSize: 16, NumHiddenLayers: 2, NumAttentionHeads: 2, IntermediateSize: 32,
            ImageSize: 28, PatchSize: 7, NumChannels: 1));
        vit.InitializeWeights();
        vit.eval();
        var tokens = vit.HiddenStates(pixels);
        Assert.Equal(3, tokens.Count);
        Assert.Equal(new long[] { 2, 17, 16 }, tokens[^1].shape);                           // 16 patches of 7×7 + [CLS]
        using var vitOutput = vit.EncodeImages(pixels);
        using var normed = nn.functional.layer_norm(tokens[^1], [16], eps: 1e-12);           // final LayerNorm starts at unit scale
        Assert.True((normed - vitOutput.LastHiddenState).abs().max().item<float>() < 1e-4);
        Assert.Equal(new long[] { 2, 16 }, ImageFeatures.Pool(tokens[^1]).shape);
    }

    [Fact]
    [Trait("Category", "Slow")]
    public void SimCLR_steps_on_augmented_views_lower_NT_Xent()
    {
        using var backbone = TinyResNet();
        using var head = new ProjectionHead(16, 32, 8);
        var augment = new ContrastiveAugmentation(new AugmentationOptions(BlurProbability: 0));
        using var images = Images();
        var parameters = backbone.parameters().Concat(head.parameters()).ToList();
        using var optimizer = optim.Adam(parameters, lr: 3e-3);
        double first = 0, last = 0;
        for (int step = 0; step < 25; step++)
        {
            using var scope = NewDisposeScope();
            var (a, b) = augment.Views(images, seed: 1, step: step);
            var loss = ContrastiveLosses.NtXent(head.forward(backbone.Features(a)), head.forward(backbone.Features(b)), 0.5);
            optimizer.zero_grad();
            loss.backward();
            optimizer.step();
            if (step < 5) first += loss.item<float>() / 5;
            if (step >= 20) last += loss.item<float>() / 5;
        }
        Assert.True(last < first - 0.1, $"NT-Xent went from {first:F3} to {last:F3}");
    }

    [Fact]
    public void CsMI_loss_reaches_both_levels_of_the_backbone()
    {
        using var query = TinyResNet();
        using var key = TinyResNet();
        using var head1 = new ProjectionHead(8, 16, 8);
        using var head2 = new ProjectionHead(16, 16, 8);
        using var images = Images();
        using var bank = new MemoryBank(8, 8, seed: 3);
        var indices = arange(8, dtype: ScalarType.Int64);
        var augment = new ContrastiveAugmentation(new AugmentationOptions());
        var (x, xKey) = augment.Views(images, 2, 0);

        List<Tensor> Levels(ResNetModel model, Tensor pixels) =>
        [
            head1.forward(ImageFeatures.Pool(model.HiddenStates(pixels)[1])),
            head2.forward(ImageFeatures.Pool(model.HiddenStates(pixels)[2])),
        ];
        List<Tensor> keys, partnerKeys;
        Tensor neighbourIndex, partners;
        using (no_grad())
        {
            keys = Levels(key, xKey);
            bank.Update(indices, keys[1]);
            neighbourIndex = bank.Neighbours(keys[1], indices, 2);                            // (8, 2)
            partners = images.index_select(0, neighbourIndex[.., 0]);
            partnerKeys = Levels(key, partners);
        }
        var lambda = Csmi.SampleLambda(8, seed: 2, step: 0);
        var mixed = Csmi.Mix(x, partners, lambda);
        var queries = Levels(query, x);
        var mixedQueries = Levels(query, mixed);
        using var queue1 = new FeatureQueue(16, 8, 4);
        using var queue2 = new FeatureQueue(16, 8, 5);
        var loss = Csmi.Loss(
        [
            new CsmiLevel(queries[0], keys[0], mixedQueries[0], partnerKeys[0], queue1.Features),
            new CsmiLevel(queries[1], keys[1], mixedQueries[1], partnerKeys[1], queue2.Features, bank.Features.index_select(0, neighbourIndex.flatten()).view(8, 2, 8)),
        ], lambda, 0.2);
        loss.backward();
        Assert.True(float.IsFinite(loss.item<float>()));
        var grads = query.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad);
        Assert.True(grads["encoder.stages.0.layers.0.layer.0.convolution.weight"]!.abs().sum().item<float>() > 0);
        Assert.True(grads["encoder.stages.1.layers.0.layer.1.convolution.weight"]!.abs().sum().item<float>() > 0);
        Assert.All(key.parameters(), p => Assert.Null(p.grad));                               // the key encoder is only averaged into
    }
}
