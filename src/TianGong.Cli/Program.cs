using System.CommandLine;
using TianGong.Cli.Commands;

// Before anything touches libtorch: its OpenMP runtime reads its wait policy once, when it loads (TorchRuntime.cs).
TianGong.TorchRuntime.ConfigureBeforeFirstUse();

// TianGong's command line: every stage of the loop is a subcommand; ./tiangong sets up and forwards here.
var root = new RootCommand("TianGong (天工): pretrain, adapt, compress and serve foundation models in .NET")
{
    DemoCommand.Create(),
    PretrainCommand.Create(),
    PretrainVisionCommand.Create(),
    EvalVisionCommand.Create(),
    GenerateCommand.Create(),
    ServeCommand.Create(),
    ScoreCommand.Create(),
    EmbedCommand.Create(),
    TokenizerCommand.Create(),
    DataCommand.Create(),
    ConvertCommand.Create(),
    MergeCommand.Create(),
    FinetuneCommand.Create(),
    DistillCommand.Create(),
    EvalCommand.Create(),
    LaunchCommand.Create(),
    PlanCommand.Create(),
    QuantizeCommand.Create(),
    ExportCommand.Create(),
    ExtractCommand.Create(),
};
// Training handles Ctrl-C itself (Commands/Interruption.cs): System.CommandLine would kill the process 2 seconds
// after the signal, which can be in the middle of writing a checkpoint.
// Response files off: `--text "@user hi"` is text, never a path that System.CommandLine reads in (issue 8/14).
return await root.Parse(args, new ParserConfiguration { ResponseFileTokenReplacer = null }).InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = null });
