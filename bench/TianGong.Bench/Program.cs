// Benchmarks, run from the repository root:
//   dotnet run -c Release --project bench/TianGong.Bench -- training [config] [steps] [threads]
//   dotnet run -c Release --project bench/TianGong.Bench -- tokenizer
using TianGong.Bench;

return args.FirstOrDefault() switch
{
    "training" => TrainingBench.Run(args[1..]),
    _ => Usage(),
};

static int Usage()
{
    Console.Error.WriteLine("usage: TianGong.Bench training [config] [steps] [threads] | tokenizer");
    return 2;
}
