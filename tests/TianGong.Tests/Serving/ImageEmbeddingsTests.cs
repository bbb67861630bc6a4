using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using SkiaSharp;
using TianGong.Checkpoints;
using TianGong.Models;
using TianGong.Models.Vit;
using TianGong.Tests.Vision;
using TianGong.Vision;

namespace TianGong.Tests.Serving;

/// <summary>/v1/embeddings on a vision folder: image data URLs in, the same vectors embed --image computes out.</summary>
public sealed class ImageEmbeddingsTests : IDisposable
{
    private readonly string dir = Path.Combine(Path.GetTempPath(), "tiangong-img-serve-" + Guid.NewGuid().ToString("N"));

    public ImageEmbeddingsTests() => Directory.CreateDirectory(dir);

    public void Dispose()
    {
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
    }

    private static readonly ViTConfig TinyVit = new(HiddenSize: 32, NumHiddenLayers: 1, NumAttentionHeads: 2, IntermediateSize: 64,
        ImageSize: 28, PatchSize: 7, NumChannels: 1);

    /// <summary>A 28×28 greyscale gradient encoded as PNG or JPEG.</summary>
    private static byte[] Image(SKEncodedImageFormat format, int shift)
    {
        using var bitmap = new SKBitmap(28, 28, SKColorType.Gray8, SKAlphaType.Opaque);
        for (int y = 0; y < 28; y++)
            for (int x = 0; x < 28; x++)
            {
                var v = (byte)((x * 9 + y * shift) % 256);
                bitmap.SetPixel(x, y, new SKColor(v, v, v));
            }
        using var data = bitmap.Encode(format, 90);
        return data.ToArray();
    }

    private static string DataUrl(string mediaType, byte[] bytes) => $"data:{mediaType};base64,{Convert.ToBase64String(bytes)}";

    /// <summary>A PNG whose header declares a 50000×50000 canvas (with valid CRCs) and carries no pixels: refused before decoding.</summary>
    private static byte[] HugePngHeader()
    {
        var ihdr = new byte[13];
        BinaryPrimitives.WriteInt32BigEndian(ihdr, 50000);
        BinaryPrimitives.WriteInt32BigEndian(ihdr.AsSpan(4), 50000);
        ihdr[8] = 8;                                                                      // 8-bit greyscale
        var png = new List<byte> { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A };
        void Chunk(string type, byte[] data)
        {
            var length = new byte[4];
            BinaryPrimitives.WriteInt32BigEndian(length, data.Length);
            png.AddRange(length);
            var body = Encoding.ASCII.GetBytes(type).Concat(data).ToArray();
            png.AddRange(body);
            uint crc = 0xFFFFFFFF;
            foreach (var b in body)
            {
                crc ^= b;
                for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320 & (uint)-(int)(crc & 1));
            }
            var crcBytes = new byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(crcBytes, ~crc);
            png.AddRange(crcBytes);
        }
        Chunk("IHDR", ihdr);
        Chunk("IDAT", [0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);               // an empty zlib stream
        Chunk("IEND", []);
        return [.. png];
    }

    private float[] Reference(ViTModel model, byte[] encoded, string name)
    {
        var path = Path.Combine(dir, name);
        File.WriteAllBytes(path, encoded);
        using var _ = no_grad();
        using var pixels = new ImageProcessor(VisionPretrainingTests.TinyConfig().Processor).Preprocess(ImageFolder.Read(path, 1));
        return ImageEmbedding.Embed(model, pixels, Pooling.Mean)[0];
    }

    [Fact]
    public async Task A_vision_folder_embeds_png_and_jpeg_data_urls_as_embed_image_does_and_refuses_bad_input()
    {
        manual_seed(11);
        using var model = new ViTModel(TinyVit);
        model.eval();
        ModelFolder.Save(dir, model, TinyVit, null);
        VisionPretrainingTests.TinyConfig().Processor.Save(Path.Combine(dir, ImageProcessorConfig.FileName));
        var (png, jpeg) = (Image(SKEncodedImageFormat.Png, 3), Image(SKEncodedImageFormat.Jpeg, 5));
        var (expectedPng, expectedJpeg) = (Reference(model, png, "a.png"), Reference(model, jpeg, "b.jpg"));

        await using var server = await TestServer.Start(load: () => ModelFolder.Load(dir));
        await server.WaitReady();
        var (status, single) = await server.Post("/v1/embeddings", new { model = "tiny-poet", input = DataUrl("image/png", png) });
        Assert.Equal(200, status);
        Assert.Equal("list", (string?)single["object"]);
        Assert.Equal("embedding", (string?)single["data"]![0]!["object"]);
        var vector = single["data"]![0]!["embedding"]!.AsArray().Select(v => (float)v!).ToArray();
        Assert.Equal(32, vector.Length);
        Assert.Equal(expectedPng, vector, (a, b) => Math.Abs(a - b) < 1e-5);

        var (status64, both) = await server.Post("/v1/embeddings", new
        {
            model = "tiny-poet", input = new[] { DataUrl("image/jpeg", jpeg), DataUrl("image/png", png) }, encoding_format = "base64",
        });
        Assert.Equal(200, status64);
        float[] Decoded(int i) => MemoryMarshal.Cast<byte, float>(Convert.FromBase64String((string)both["data"]![i]!["embedding"]!)).ToArray();
        Assert.Equal(1, (int)both["data"]![1]!["index"]!);
        Assert.Equal(expectedJpeg, Decoded(0), (a, b) => Math.Abs(a - b) < 1e-5);
        Assert.Equal(expectedPng, Decoded(1), (a, b) => Math.Abs(a - b) < 1e-5);
        Assert.NotEqual(Decoded(0), Decoded(1));

        async Task Refused(object input, string fragment)
        {
            var (code, error) = await server.Post("/v1/embeddings", new { model = "tiny-poet", input });
            Assert.Equal(400, code);
            Assert.Contains(fragment, (string)error["error"]!["message"]!);
        }
        await Refused("a photo of a shirt", "image model");
        await Refused(new[] { DataUrl("image/png", png), "text" }, "mixes");
        await Refused("data:image/png;base64,@@not base64@@", "malformed");
        await Refused("data:image/png,rawbytes", "base64");
        await Refused("data:text/plain;base64,aGVsbG8=", "image/*");
        await Refused("data:image/png;base64no-comma", "comma");
        await Refused(DataUrl("image/png", Encoding.ASCII.GetBytes("not a png at all")), "not an image");
        await Refused(DataUrl("image/png", png[..60]), "input[0]");
        await Refused(DataUrl("image/png", HugePngHeader()), "over the limit");

        var (completion, notText) = await server.Post("/v1/completions", new { model = "tiny-poet", prompt = "春" });
        Assert.Equal(400, completion);
        Assert.Contains("image model", (string)notText["error"]!["message"]!);
    }

    [Fact]
    public async Task A_text_folder_refuses_image_input()
    {
        await using var server = await TestServer.Start();
        var (status, error) = await server.Post("/v1/embeddings", new { model = "tiny-poet", input = DataUrl("image/png", Image(SKEncodedImageFormat.Png, 1)) });
        Assert.Equal(400, status);
        Assert.Contains("text model", (string)error["error"]!["message"]!);
    }
}
