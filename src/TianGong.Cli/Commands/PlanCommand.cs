using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Spectre.Console;
using TianGong.Parallelism.Planning;

namespace TianGong.Cli.Commands;

/// <summary><c>tiangong plan</c>: the best parallel layouts for a model on a cluster, from the analytic model of <see cref="Planner"/>.</summary>
internal static class PlanCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = $"A preset ({string.Join(", ", ModelShape.Presets.Keys)}) or a model's config.json (default with --apply: the config's model section)" };
        var devices = new Option<int>("--devices") { Description = "Number of devices (GPUs)", Required = true };
        var memory = new Option<double>("--device-memory") { Description = "Memory per device, GB", DefaultValueFactory = _ => 80 };
        var tflops = new Option<double>("--device-tflops") { Description = "Peak dense bf16 TFLOP/s per device (A100: 312, H100 SXM: 989)", DefaultValueFactory = _ => 312 };
        var intra = new Option<double>("--intra-node-gbps") { Description = "Bandwidth per device inside a node, GB/s one direction (A100 NVLink: 300)", DefaultValueFactory = _ => 300 };
        var inter = new Option<double>("--inter-node-gbps") { Description = "Bandwidth per device between nodes, GB/s one direction (one HDR InfiniBand NIC per GPU: 25)", DefaultValueFactory = _ => 25 };
        var perNode = new Option<int>("--devices-per-node") { Description = "Devices per node", DefaultValueFactory = _ => 8 };
        var batch = new Option<int?>("--global-batch") { Description = "Sequences per step (default: the preset's published batch, 512 for a config.json)" };
        var seq = new Option<int?>("--seq") { Description = "Sequence length (default: the preset's, or max_position_embeddings)" };
        var layout = new Option<string?>("--layout") { Description = "Evaluate this layout instead of searching, e.g. tp=8,pp=8,dp=16,micro_batch=1,zero=0,recompute=full" };
        var top = new Option<int>("--top") { Description = "How many layouts to print", DefaultValueFactory = _ => 5 };
        var json = new Option<bool>("--json") { Description = "Print a JSON array instead of a table" };
        var apply = new Option<string?>("--apply") { Description = "Write the best layout TianGong can run into this training config's parallel section (its model, batch and seq_len are the defaults)" };
        var command = new Command("plan", "Search data/tensor/pipeline parallel layouts, ZeRO and recomputation for a model on a cluster (analytic memory and time model)")
            { model, devices, memory, tflops, intra, inter, perNode, batch, seq, layout, top, json, apply };
        command.SetAction(parse => CliRunner.Run(() =>
        {
            var application = parse.GetValue(apply) is { } configPath ? PlanApplication.Open(configPath) : null;
            var shape = parse.GetValue(model) is { } named ? ModelShape.Resolve(named)
                : application?.Model() ?? throw new TianGongException("--model: required (a preset or a config.json), unless --apply CONFIG gives the model");
            var cluster = new Cluster(parse.GetValue(devices), parse.GetValue(memory), parse.GetValue(tflops), parse.GetValue(intra), parse.GetValue(inter), parse.GetValue(perNode));
            cluster.Validate();
            int globalBatch = parse.GetValue(batch) ?? application?.GlobalBatch ?? shape.DefaultGlobalBatch;
            int sequence = parse.GetValue(seq) ?? application?.Seq ?? shape.DefaultSeq;
            if (globalBatch < 1) throw new TianGongException($"--global-batch: must be at least 1, got {globalBatch}");
            if (sequence < 1) throw new TianGongException($"--seq: must be at least 1, got {sequence}");
            var planner = new Planner(shape, cluster, globalBatch, sequence);
            IReadOnlyList<PlanEstimate> estimates;
            if (parse.GetValue(layout) is { } given)
            {
                var l = PlanLayout.Parse(given, cluster.Devices);
                if (planner.Check(l) is { } problem) throw new TianGongException($"--layout {given}: {problem}");
                estimates = [planner.Evaluate(l)];
            }
            else
            {
                estimates = planner.Search().Take(Math.Max(1, parse.GetValue(top))).ToList();
                if (estimates.Count == 0)
                    throw new TianGongException($"no layout of {shape.Name} fits {cluster.Devices} devices of {cluster.MemoryGB} GB (global batch {globalBatch}, seq {sequence}); add devices or memory");
            }
            if (parse.GetValue(json)) Console.WriteLine(ToJson(estimates));
            else Print(shape, cluster, globalBatch, sequence, estimates);
            if (application is not null)
            {
                var applied = Apply(application, parse.GetValue(layout) is null ? planner.Search() : estimates, globalBatch);
                // stdout stays pure JSON under --json.
                (parse.GetValue(json) ? Console.Error : Console.Out).WriteLine($"wrote parallel {applied} into {parse.GetValue(apply)}");
            }
            return 0;
        }));
        return command;
    }

    /// <summary>The fastest estimate that TianGong can run (the planner also searches layouts it only predicts), written into the config.</summary>
    private static TianGong.Parallelism.ParallelConfig Apply(PlanApplication application, IEnumerable<PlanEstimate> estimates, int globalBatch)
    {
        string? firstProblem = null;
        foreach (var e in estimates.Where(e => e.Fits))
        {
            var (config, problem) = application.ToParallelConfig(e.Layout, globalBatch);
            if (config is not null)
            {
                application.Write(config);
                return config;
            }
            firstProblem ??= $"{e.Layout}: {problem}";
        }
        throw new TianGongException($"--apply: no fitting layout that TianGong can run" + (firstProblem is null ? "" : $" (best one: {firstProblem})"));
    }

    internal static string ToJson(IEnumerable<PlanEstimate> estimates)
    {
        var array = new JsonArray();
        foreach (var e in estimates)
            array.Add(new JsonObject
            {
                ["dp"] = e.Layout.Dp, ["tp"] = e.Layout.Tp, ["pp"] = e.Layout.Pp, ["virtual_stages"] = e.Layout.VirtualStages,
                ["micro_batch"] = e.Layout.MicroBatch, ["zero"] = e.Layout.Zero, ["recompute"] = e.Layout.Recompute,
                ["memory_gb"] = Math.Round(e.MemoryGB, 2), ["fits"] = e.Fits, ["step_s"] = Math.Round(e.StepSeconds, 4),
                ["tokens_per_s"] = Math.Round(e.TokensPerSecond), ["tflops_per_device"] = Math.Round(e.TflopsPerDevice, 1), ["mfu"] = Math.Round(e.Mfu, 4),
                ["hw_tflops_per_device"] = Math.Round(e.HwTflopsPerDevice, 1), ["hfu"] = Math.Round(e.Hfu, 4),
                ["bubble"] = Math.Round(e.BubbleFraction, 4), ["comm_s"] = Math.Round(e.CommSeconds, 4), ["problem"] = e.Problem,
            });
        return array.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    private static void Print(ModelShape shape, Cluster cluster, int batch, int seq, IReadOnlyList<PlanEstimate> estimates)
    {
        AnsiConsole.MarkupLineInterpolated($"[bold]{shape.Name}[/]: {shape.Parameters / 1e9:F1}B parameters, {shape.Layers} layers, hidden {shape.Hidden}; batch {batch} × seq {seq}; {cluster.Devices} devices ({cluster.DevicesPerNode}/node) of {cluster.MemoryGB} GB, {cluster.PeakTflops} TFLOP/s peak");
        var table = new Table().AddColumns("tp", "pp", "dp", "v", "mb", "zero", "recompute", "GB/dev", "step s", "tokens/s", "TFLOP/s", "MFU", "HW TFLOP/s", "HFU", "bubble");
        foreach (var c in table.Columns.Skip(0)) c.RightAligned();
        string F(double x, string format) => x.ToString(format, CultureInfo.InvariantCulture);
        foreach (var e in estimates)
        {
            var l = e.Layout;
            table.AddRow(l.Tp.ToString(), l.Pp.ToString(), l.Dp.ToString(), l.VirtualStages.ToString(), l.MicroBatch.ToString(), l.Zero.ToString(), l.Recompute,
                (e.Fits ? "" : "[red]") + F(e.MemoryGB, "F1") + (e.Fits ? "" : "[/]"), F(e.StepSeconds, "G4"), F(e.TokensPerSecond, "N0"),
                F(e.TflopsPerDevice, "F1"), F(e.Mfu, "P1"), F(e.HwTflopsPerDevice, "F1"), F(e.Hfu, "P1"), F(e.BubbleFraction, "P1"));
        }
        AnsiConsole.Write(table);
        foreach (var e in estimates.Where(e => e.Problem is not null))
            AnsiConsole.MarkupLineInterpolated($"[yellow]{e.Layout}[/]: {e.Problem}");
    }
}
