using System.IO.Compression;
using SkiaSharp;
using TianGong.Vision;

namespace TianGong.Tests.Vision;

/// <summary>IDX files and Fashion-MNIST, image folders and image processors.</summary>
public class DataTests
{
    private static byte[] Idx(byte type, int[] shape, byte[] data)
    {
        var bytes = new List<byte> { 0, 0, type, (byte)shape.Length };
        foreach (var d in shape) bytes.AddRange(BitConverter.GetBytes(d).Reverse());
        bytes.AddRange(data);
        return bytes.ToArray();
    }

    private static void WriteGz(string path, byte[] bytes)
    {
        using var file = File.Create(path);
        using var gz = new GZipStream(file, CompressionLevel.Fastest);
        gz.Write(bytes);
    }

    [Fact]
    public void IDX_files_read_back_with_their_shape_and_bad_ones_are_named()
    {
        var dir = TestModels.TempDir();
        var data = Enumerable.Range(0, 12).Select(i => (byte)(i * 20)).ToArray();
        WriteGz(Path.Combine(dir, "a.gz"), Idx(0x08, [3, 2, 2], data));
        using var t = IdxFile.ReadBytes(Path.Combine(dir, "a.gz"));
        Assert.Equal(new long[] { 3, 2, 2 }, t.shape);
        Assert.Equal(ScalarType.Byte, t.dtype);
        Assert.Equal(data, t.data<byte>().ToArray());
        File.WriteAllBytes(Path.Combine(dir, "plain"), Idx(0x08, [2], [7, 9]));
        using var plain = IdxFile.ReadBytes(Path.Combine(dir, "plain"));
        Assert.Equal(new byte[] { 7, 9 }, plain.data<byte>().ToArray());

        WriteGz(Path.Combine(dir, "short.gz"), Idx(0x08, [3, 2, 2], data[..5]));
        Assert.Contains("truncated", Assert.Throws<TianGongException>(() => IdxFile.ReadBytes(Path.Combine(dir, "short.gz"))).Message);
        WriteGz(Path.Combine(dir, "float.gz"), Idx(0x0D, [1], [0, 0, 0, 0]));
        Assert.Contains("not unsigned bytes", Assert.Throws<TianGongException>(() => IdxFile.ReadBytes(Path.Combine(dir, "float.gz"))).Message);
        File.WriteAllBytes(Path.Combine(dir, "junk.gz"), [1, 2, 3, 4, 5]);
        Assert.Throws<TianGongException>(() => IdxFile.ReadBytes(Path.Combine(dir, "junk.gz")));
    }

    [Fact]
    public void Fashion_MNIST_files_load_as_images_and_labels_and_missing_ones_name_the_package()
    {
        var dir = TestModels.TempDir();
        var pixels = Enumerable.Range(0, 2 * 28 * 28).Select(i => (byte)(i % 251)).ToArray();
        WriteGz(Path.Combine(dir, "t10k-images-idx3-ubyte.gz"), Idx(0x08, [2, 28, 28], pixels));
        WriteGz(Path.Combine(dir, "t10k-labels-idx1-ubyte.gz"), Idx(0x08, [2], [9, 0]));
        using var test = FashionMnist.Load("test", dir);
        Assert.Equal(new long[] { 2, 1, 28, 28 }, test.Images.shape);
        Assert.Equal(new long[] { 9, 0 }, test.Labels.data<long>().ToArray());
        Assert.Equal("Ankle boot", test.Classes[9]);
        Assert.Equal(pixels[28 * 28 + 5], test.Images[1, 0, 0, 5].item<byte>());

        var e = Assert.Throws<TianGongException>(() => FashionMnist.Load("train", dir));
        Assert.Contains("dataset-fashion-mnist", e.Message);
        WriteGz(Path.Combine(dir, "train-images-idx3-ubyte.gz"), Idx(0x08, [1, 28, 28], pixels[..784]));
        WriteGz(Path.Combine(dir, "train-labels-idx1-ubyte.gz"), Idx(0x08, [1], [10]));
        Assert.Contains("label 10", Assert.Throws<TianGongException>(() => FashionMnist.Load("train", dir)).Message);
        Assert.Contains("train or test", Assert.Throws<TianGongException>(() => FashionMnist.Load("val", dir)).Message);
    }

    /// <summary>The real data from Debian's package, installed by setup on first use (./tiangong test exports TIANGONG_SETUP).</summary>
    [Fact, Trait("Category", "Slow")]
    public void Fashion_MNIST_test_split_has_ten_thousand_images_a_thousand_per_class()
    {
        using var test = FashionMnist.Load("test");
        Assert.Equal(new long[] { 10000, 1, 28, 28 }, test.Images.shape);
        Assert.Equal(Enumerable.Repeat(1000L, 10), test.Labels.bincount(null).data<long>().ToArray());
        Assert.True(test.Images.to(ScalarType.Float32).mean().item<float>() is > 40 and < 110, "clothing on a black background");
    }

    private static void WritePng(string path, int width, int height, Func<int, int, SKColor> color)
    {
        using var bitmap = new SKBitmap(new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Unpremul));
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
                bitmap.SetPixel(x, y, color(x, y));
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        using var file = File.Create(path);
        bitmap.Encode(file, SKEncodedImageFormat.Png, 100);
    }

    [Fact]
    public void Image_folders_give_pixels_and_labels_from_subfolder_names()
    {
        var root = TestModels.TempDir();
        WritePng(Path.Combine(root, "cat", "b.png"), 3, 2, (x, y) => new SKColor((byte)(10 * x), (byte)(100 + y), 200));
        WritePng(Path.Combine(root, "ant", "a.png"), 3, 2, (_, _) => new SKColor(255, 0, 0, 128));
        WritePng(Path.Combine(root, "ant", "big.png"), 6, 4, (_, _) => new SKColor(0, 0, 255));
        File.WriteAllText(Path.Combine(root, "ant", "notes.txt"), "not an image");

        var folder = ImageFolder.Open(root);
        Assert.Equal(["ant", "cat"], folder.Classes);
        Assert.Equal([0, 0, 1], folder.Samples.Select(s => s.Label));

        using var rgb = ImageFolder.Read(folder.Samples[2].Path, 3);                        // cat/b.png
        Assert.Equal(new long[] { 3, 2, 3 }, rgb.shape);
        Assert.Equal(new byte[] { 0, 10, 20, 0, 10, 20 }, rgb[0].flatten().data<byte>().ToArray());
        Assert.Equal(new byte[] { 100, 100, 100, 101, 101, 101 }, rgb[1].flatten().data<byte>().ToArray());
        using var red = ImageFolder.Read(folder.Samples[0].Path, 3);
        Assert.Equal(255, red[0, 0, 0].item<byte>());                                        // alpha dropped, not premultiplied
        using var grey = ImageFolder.Read(folder.Samples[0].Path, 1);
        Assert.Equal((255 * 19595 + 0x8000) >> 16, grey[0, 0, 0].item<byte>());              // PIL's "L" of pure red: 76

        using var all = folder.LoadAll(3, 2, 3);
        Assert.Equal(new long[] { 3, 3, 2, 3 }, all.Images.shape);
        Assert.Equal(255, all.Images[1, 2, 1, 1].item<byte>());                              // big.png, resized, still blue
        Assert.Equal(new long[] { 0, 0, 1 }, all.Labels.data<long>().ToArray());

        File.WriteAllText(Path.Combine(root, "cat", "broken.png"), "no png here");
        Assert.Contains("broken.png", Assert.Throws<TianGongException>(() => ImageFolder.Open(root).LoadAll(3, 2, 3)).Message);
        Assert.Contains("no class subfolders", Assert.Throws<TianGongException>(() => ImageFolder.Open(Path.Combine(root, "ant"))).Message);
    }

    [Fact]
    public void ViT_processor_rescales_and_normalises_per_channel()
    {
        var processor = new ImageProcessor(ImageProcessorConfig.Parse(System.Text.Json.Nodes.JsonNode.Parse("""
            {"image_processor_type": "ViTImageProcessor", "size": {"height": 2, "width": 2}, "image_mean": [0.5, 0.25, 0],
             "image_std": [0.5, 0.25, 1], "do_resize": true, "do_rescale": true, "rescale_factor": 0.00392156862745098}
            """)!, "p.json"));
        using var image = tensor(new byte[] { 255, 0, 51, 102, 0, 255, 255, 0, 51, 51, 51, 51 }, [3, 2, 2]);
        using var pixels = processor.Preprocess(image);
        Assert.Equal(new long[] { 1, 3, 2, 2 }, pixels.shape);
        // (v / 255 - mean) / std, channel by channel.
        float[] want = [1, -1, -0.6f, -0.2f, -1, 3, 3, -1, 0.2f, 0.2f, 0.2f, 0.2f];
        var got = pixels.data<float>().ToArray();
        for (int i = 0; i < want.Length; i++) Assert.Equal(want[i], got[i], 5);

        // Resizing a greyscale batch to a square: the channel is repeated for a three-value mean, a constant stays constant.
        var square = new ImageProcessor(new ImageProcessorConfig(Size: new ImageSize(4, 4)));
        using var grey = full([2, 1, 28, 28], (byte)255, dtype: ScalarType.Byte);
        using var resized = square.Preprocess(grey);
        Assert.Equal(new long[] { 2, 3, 4, 4 }, resized.shape);
        Assert.True((resized - 1).abs().max().item<float>() < 1e-5);
        var e = Assert.Throws<TianGongException>(() => new ImageProcessor(new ImageProcessorConfig(ImageMean: [0.5], ImageStd: [0.5])).Preprocess(zeros(1, 3, 4, 4)));
        Assert.Contains("image_mean has 1", e.Message);
    }

    [Fact]
    public void ConvNext_processor_resizes_the_short_edge_and_crops_the_center()
    {
        var processor = new ImageProcessor(ImageProcessorConfig.Parse(System.Text.Json.Nodes.JsonNode.Parse("""
            {"image_processor_type": "ConvNextImageProcessor", "size": 8, "crop_pct": 0.5, "resample": 2, "do_normalize": false, "do_rescale": false}
            """)!, "p.json"));
        Assert.Equal(8, processor.Size.ShortestEdge);
        // 10 × 20 → short edge 8 / 0.5 = 16 → 16 × 32 → center 8 × 8: rows 4..12, columns 12..20 of the resized image.
        // On a left-to-right ramp 0..19, resized column j samples source x = (j + 0.5) · 20 / 32 - 0.5.
        using var ramp = arange(20, dtype: ScalarType.Float32).view(1, 1, 1, 20).expand(1, 3, 10, 20).contiguous();
        using var pixels = processor.Preprocess(ramp);
        Assert.Equal(new long[] { 1, 3, 8, 8 }, pixels.shape);
        Assert.Equal(12.5 * 0.625 - 0.5, pixels[0, 0, 0, 0].item<float>(), 4);               // column 12
        Assert.Equal(19.5 * 0.625 - 0.5, pixels[0, 0, 0, 7].item<float>(), 4);               // column 19
        var e = Assert.Throws<TianGongException>(() => new ImageProcessor(new ImageProcessorConfig(ImageProcessorType: "CLIPImageProcessor")));
        Assert.Contains("image_processor_type", e.Message);
        e = Assert.Throws<TianGongException>(() => new ImageProcessor(new ImageProcessorConfig(Resample: 5)));
        Assert.Contains("resample", e.Message);
    }
}
