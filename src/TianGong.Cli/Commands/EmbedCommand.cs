using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using TianGong.Checkpoints;
using TianGong.Models;

namespace TianGong.Cli.Commands;

internal static class EmbedCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Encoder model folder (bert), or an image model folder (vit, resnet) with --image or --pixel-values", Required = true };
        var text = new Option<string[]>("--text") { Description = "Texts to embed, one vector each (tokenized with the folder's tokenizer)", AllowMultipleArgumentsPerToken = true };
        var ids = new Option<string[]>("--ids") { Description = "Token ids of one sequence, comma-separated (repeatable: one vector each)", AllowMultipleArgumentsPerToken = true };
        var types = new Option<string[]>("--token-types") { Description = "Segment ids for each --ids sequence, comma-separated, in the same order (default: all 0)", AllowMultipleArgumentsPerToken = true };
        var pooling = new Option<Pooling>("--pooling") { Description = "cls: first token; mean: mean over tokens; pooler: the model's pooler layer", DefaultValueFactory = _ => Pooling.Mean };
        var image = new Option<string[]>("--image") { Description = "Image files (PNG, JPEG) to embed, one vector each, preprocessed by the folder's preprocessor_config.json", AllowMultipleArgumentsPerToken = true };
        var pixelValues = new Option<string?>("--pixel-values") { Description = "A safetensors file whose 'pixel_values' (B, C, H, W) is fed as it is (as a Hugging Face image processor made it)" };
        var json = new Option<bool>("--json") { Description = "Print {\"embeddings\":[[...]],\"dim\":N,\"pooling\":\"mean\"}" };
        var command = new Command("embed", "Sentence vectors from an encoder model") { model, text, ids, types, image, pixelValues, pooling, json };
        var loading = ModelLoadingOptions.AddTo(command);
        command.SetAction(parse => CliRunner.Run(() =>
        {
            var (texts, idLists) = (parse.GetValue(text) ?? [], parse.GetValue(ids) ?? []);
            var (images, pixelFile) = (parse.GetValue(image) ?? [], parse.GetValue(pixelValues));
            int inputs = (texts.Length > 0 ? 1 : 0) + (idLists.Length > 0 ? 1 : 0) + (images.Length > 0 ? 1 : 0) + (pixelFile is null ? 0 : 1);
            if (inputs != 1) throw new TianGongException("embed: give exactly one of --text, --ids, --image or --pixel-values");
            using var loaded = loading.Load(parse, parse.GetValue(model)!);
            if (images.Length > 0 || pixelFile is not null)
                return ImageEmbeddingOutput.Print(loaded, images, pixelFile, parse.GetValue(pooling), parse.GetValue(json));
            var encoder = loaded.AsEncoder("embed");
            var sequences = idLists.Length > 0
                ? idLists.Select(s => CliRunner.ParseIds(s, "--ids")).ToList()
                : texts.Select(t => ModelOptions.RequireTokenizer(loaded, "--ids").Encode(t)).ToList();
            var typeLists = parse.GetValue(types) ?? [];
            if (typeLists.Length > 0 && typeLists.Length != idLists.Length)
                throw new TianGongException($"--token-types: give one list per --ids sequence ({idLists.Length}), got {typeLists.Length}");
            List<int[]>? segments = typeLists.Length > 0 ? typeLists.Select(s => CliRunner.ParseIds(s, "--token-types")).ToList() : null;
            var mode = parse.GetValue(pooling);
            var vectors = SentenceEmbedding.Embed(encoder, sequences, mode, segments);
            var modeName = mode.ToString().ToLowerInvariant();
            if (parse.GetValue(json))
            {
                var output = new JsonObject
                {
                    ["embeddings"] = new JsonArray(vectors.Select(v => (JsonNode)new JsonArray(v.Select(x => (JsonNode)x).ToArray())).ToArray()),
                    ["dim"] = vectors[0].Length,
                    ["pooling"] = modeName,
                };
                Console.WriteLine(output.ToJsonString());
                return 0;
            }
            Console.Error.WriteLine($"{vectors.Count} vector(s) of dim {vectors[0].Length}, pooling {modeName}");
            foreach (var v in vectors) Console.WriteLine(string.Join(' ', v.Select(x => x.ToString("R", CultureInfo.InvariantCulture))));
            return 0;
        }));
        return command;
    }
}
