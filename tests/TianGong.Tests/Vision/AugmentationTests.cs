using TianGong.Vision;

namespace TianGong.Tests.Vision;

/// <summary>Views are a pure function of (seed, step, view), keep shape and range, and do nothing at zero strength.</summary>
public class AugmentationTests
{
    private static Tensor Images(int channels = 1)
    {
        manual_seed(7);
        return rand(4, channels, 28, 28);
    }

    [Fact]
    public void Views_are_deterministic_per_seed_step_and_view()
    {
        var augment = new ContrastiveAugmentation(new AugmentationOptions());
        using var images = Images(3);
        using var a = augment.Apply(images, seed: 1, step: 5, view: 0);
        manual_seed(999);                                                    // the global generator plays no part
        using var again = augment.Apply(images, seed: 1, step: 5, view: 0);
        Assert.Equal(0f, (a - again).abs().max().item<float>());
        using var otherView = augment.Apply(images, 1, 5, 1);
        using var otherStep = augment.Apply(images, 1, 6, 0);
        using var otherSeed = augment.Apply(images, 2, 5, 0);
        foreach (var other in new[] { otherView, otherStep, otherSeed })
            Assert.True((a - other).abs().max().item<float>() > 1e-2);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public void Views_keep_shape_and_the_unit_range(int channels)
    {
        var augment = new ContrastiveAugmentation(new AugmentationOptions(Brightness: 0.9, Contrast: 0.9, BlurKernelSize: 5));
        using var images = Images(channels);
        var (first, second) = augment.Views(images, 3, 0);
        using (first)
        using (second)
            foreach (var view in new[] { first, second })
            {
                Assert.Equal(images.shape, view.shape);
                Assert.True(view.min().item<float>() >= 0 && view.max().item<float>() <= 1);
                Assert.True((view - images).abs().mean().item<float>() > 1e-3, "a view differs from the image");
            }
    }

    [Fact]
    public void Zero_strength_is_the_identity()
    {
        var augment = new ContrastiveAugmentation(AugmentationOptions.None);
        using var images = Images(3);
        using var view = augment.Apply(images, 1, 1, 0);
        Assert.True((view - images).abs().max().item<float>() < 1e-5);
    }

    [Fact]
    public void Each_operation_does_what_it_says()
    {
        using var images = Images();
        // Flip alone mirrors the width.
        var flip = new ContrastiveAugmentation(AugmentationOptions.None with { FlipProbability = 1 });
        using (var view = flip.Apply(images, 1, 1, 0))
        using (var mirrored = images.flip(3))
            Assert.True((view - mirrored).abs().max().item<float>() < 1e-5);
        // Blur alone keeps a constant image constant (weights sum to 1, reflect padding) and smooths noise.
        var blur = new ContrastiveAugmentation(AugmentationOptions.None with { BlurProbability = 1, BlurSigmaMin = 1, BlurSigmaMax = 1 });
        using (var constant = full([2, 1, 28, 28], 0.3f))
        using (var view = blur.Apply(constant, 1, 1, 0))
            Assert.True((view - 0.3f).abs().max().item<float>() < 1e-6);
        using (var view = blur.Apply(images, 1, 1, 0))
            Assert.True(view.std().item<float>() < 0.7 * images.std().item<float>());
        // Brightness alone scales the image by one factor per image, within [1 - s, 1 + s].
        var bright = new ContrastiveAugmentation(AugmentationOptions.None with { JitterProbability = 1, Brightness = 0.5 });
        using (var dim = full([3, 1, 4, 4], 0.5f))
        using (var view = bright.Apply(dim, 4, 1, 0))
            for (int i = 0; i < 3; i++)
            {
                Assert.True(view[i].std().item<float>() < 1e-6, "one factor per image");
                Assert.InRange(view[i, 0, 0, 0].item<float>(), 0.25f - 1e-6f, 0.75f + 1e-6f);
            }
        // A crop of at most a quarter of the area, resized back, is a zoom: neighbouring pixels become more alike.
        var crop = new ContrastiveAugmentation(AugmentationOptions.None with { CropScaleMin = 0.1, CropScaleMax = 0.25, CropRatioMin = 0.75, CropRatioMax = 1.33 });
        using (var view = crop.Apply(images, 1, 1, 0))
        using (var stepsBefore = (images[.., .., .., 1..] - images[.., .., .., ..^1]).abs().mean())
        using (var stepsAfter = (view[.., .., .., 1..] - view[.., .., .., ..^1]).abs().mean())
            Assert.True(stepsAfter.item<float>() < 0.7 * stepsBefore.item<float>());
    }

    [Fact]
    public void Bad_options_name_the_field()
    {
        var e = Assert.Throws<TianGongException>(() => new ContrastiveAugmentation(new AugmentationOptions(BlurKernelSize: 4)));
        Assert.Contains("blur_kernel_size", e.Message);
        e = Assert.Throws<TianGongException>(() => new ContrastiveAugmentation(new AugmentationOptions(CropScaleMin: 0.5, CropScaleMax: 0.4)));
        Assert.Contains("crop_scale_max", e.Message);
    }
}
