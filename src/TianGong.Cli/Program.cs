using System.CommandLine;
using TianGong.Cli.Commands;

// TianGong's command line: every stage of the loop is a subcommand; ./tiangong sets up and forwards here.
var root = new RootCommand("TianGong (天工): pretrain, adapt, compress and serve foundation models in .NET")
{
    DemoCommand.Create(),
    PretrainCommand.Create(),
    GenerateCommand.Create(),
    ServeCommand.Create(),
    ScoreCommand.Create(),
    TokenizerCommand.Create(),
    DataCommand.Create(),
};
return await root.Parse(args).InvokeAsync();
