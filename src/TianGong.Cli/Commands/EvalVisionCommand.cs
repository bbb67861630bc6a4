using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using TianGong.Training;
using TianGong.Vision;
using TianGong.Vision.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace TianGong.Cli.Commands;

internal static class EvalVisionCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "Vision model folder (vit or resnet), e.g. a pretrain-vision run folder" };
        var config = new Option<string?>("--config") { Description = "Instead of --model: a pretrain-vision config whose backbone starts from random weights (supervised from scratch, random-feature baselines)" };
        var probe = new Option<bool>("--linear-probe") { Description = "Train a linear classifier on frozen features" };
        var finetune = new Option<bool>("--finetune") { Description = "Fine-tune the whole network with a new linear head on --labels of the training labels" };
        var labels = new Option<string>("--labels") { Description = "Share of the training labels for --finetune: 1%, 10% or 100% (class-balanced)", DefaultValueFactory = _ => "100%" };
        var knn = new Option<int?>("--knn") { Description = "Weighted k-nearest-neighbour classifier on frozen features with this k" };
        var json = new Option<bool>("--json") { Description = "Print {\"accuracy\": x, \"mode\": ..., ...}" };
        var epochs = new Option<int>("--epochs") { Description = "Passes over the labelled training images (probe and fine-tuning)", DefaultValueFactory = _ => 10 };
        var lr = new Option<double>("--lr") { Description = "Learning rate of fine-tuning (the probe uses 10×)", DefaultValueFactory = _ => 1e-3 };
        var batch = new Option<int>("--batch-size") { Description = "Mini-batch size", DefaultValueFactory = _ => 256 };
        var seed = new Option<long>("--seed") { Description = "Seed of the label subset, head initialisation and shuffling", DefaultValueFactory = _ => 0 };
        var trainLimit = new Option<int?>("--train-limit") { Description = "Use a class-balanced subset of this many training images (before --labels)" };
        var testLimit = new Option<int?>("--test-limit") { Description = "Test on the first N test images only" };
        var device = ModelOptions.DeviceOption();
        var command = new Command("eval-vision", "Top-1 accuracy of a vision backbone on the Fashion-MNIST test split: linear probe, few-label fine-tuning or kNN")
            { model, config, probe, finetune, labels, knn, json, epochs, lr, batch, seed, trainLimit, testLimit, device };
        command.SetAction(parse => CliRunner.Run(() =>
        {
            var (dir, configPath) = (parse.GetValue(model), parse.GetValue(config));
            if ((dir is null) == (configPath is null)) throw new TianGongException("eval-vision: give exactly one of --model or --config");
            int modes = (parse.GetValue(probe) ? 1 : 0) + (parse.GetValue(finetune) ? 1 : 0) + (parse.GetValue(knn) is null ? 0 : 1);
            if (modes != 1) throw new TianGongException("eval-vision: give exactly one of --linear-probe, --finetune or --knn K");
            var mode = parse.GetValue(probe) ? VisionEvalMode.LinearProbe : parse.GetValue(finetune) ? VisionEvalMode.Finetune : VisionEvalMode.Knn;
            var options = new VisionEvalOptions(mode, ParseFraction(parse.GetValue(labels)!), parse.GetValue(knn) ?? 20, parse.GetValue(epochs),
                parse.GetValue(lr), parse.GetValue(batch), parse.GetValue(seed));
            var onDevice = ModelOptions.ParseDevice(parse.GetValue(device)!);
            set_num_threads(Environment.ProcessorCount);

            nn.Module module;
            ImageProcessor processor;
            VisionDataSection data;
            if (dir is not null)
            {
                var loaded = ModelOptions.Load(dir, parse.GetValue(device));
                var encoder = loaded.AsImageEncoder("eval-vision");
                (module, processor, data) = (loaded.Module, VisionEvaluation.ProcessorFor(dir, encoder), new VisionDataSection());
            }
            else
            {
                var cfg = PretrainVisionCommand.LoadConfig(configPath!);
                manual_seed(parse.GetValue(seed));
                (module, processor, data) = (VisionPretraining.NewBackbone(cfg.Model), new ImageProcessor(cfg.Processor, configPath!), cfg.Data);
                module.to(onDevice);
            }
            using (module)
            {
                var status = new PretrainCallbacks(m => Console.Error.WriteLine(m));
                using var train = VisionPretraining.LoadSplit(data with { TrainLimit = null }, "train", parse.GetValue(seed), null, status, parse.GetValue(trainLimit));
                using var test = VisionPretraining.LoadSplit(data, "test", parse.GetValue(seed), null, status, parse.GetValue(testLimit));
                var result = VisionEvaluation.Run(module, processor, train, test, options);
                var modeName = mode switch { VisionEvalMode.LinearProbe => "linear-probe", VisionEvalMode.Finetune => "finetune", _ => "knn" };
                if (parse.GetValue(json))
                {
                    var output = new JsonObject
                    {
                        ["accuracy"] = Math.Round(result.Accuracy, 6),
                        ["mode"] = modeName,
                        ["train_images"] = result.TrainImages,
                        ["test_images"] = result.TestImages,
                        ["seconds"] = Math.Round(result.Seconds, 2),
                    };
                    if (mode == VisionEvalMode.Finetune) output["labels"] = options.LabelFraction;
                    if (mode == VisionEvalMode.Knn) output["k"] = options.K;
                    Console.WriteLine(output.ToJsonString());
                }
                else
                    Console.WriteLine($"{modeName}: top-1 {result.Accuracy * 100:F2}% on {result.TestImages} test images ({result.TrainImages} labelled training images, {result.Seconds:F1} s)");
            }
            return 0;
        }));
        return command;
    }

    /// <summary>"1%", "10%", "100%" (or a fraction such as 0.1) → the share of labels.</summary>
    private static double ParseFraction(string text)
    {
        var t = text.Trim();
        bool percent = t.EndsWith('%');
        if (!double.TryParse(percent ? t[..^1] : t, NumberStyles.Float, CultureInfo.InvariantCulture, out double value))
            throw new TianGongException($"--labels: expected a share such as 1%, 10% or 100%, got '{text}'");
        double fraction = percent ? value / 100 : value;
        if (fraction is <= 0 or > 1) throw new TianGongException($"--labels: must be more than 0% and at most 100%, got '{text}'");
        return fraction;
    }
}
