using System.CommandLine;
using TianGong.Cli.Commands;

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
};
// Training handles Ctrl-C itself (Commands/Interruption.cs): System.CommandLine would kill the process 2 seconds
// after the signal, which can be in the middle of writing a checkpoint.
return await root.Parse(args).InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = null });
