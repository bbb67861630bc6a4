// Benchmarks, run from the repository root (results and commands go to docs/benchmarks.md):
//   dotnet run -c Release --project bench/TianGong.Bench -- training [config=configs/poetry-small.json] [steps=5] [threads=cores]
//   dotnet run -c Release --project bench/TianGong.Bench -- tokenizer [megabytes=20] [vocab=8000]
using TianGong.Bench;

return args switch
{
    ["training", .. var rest] => TrainingBench.Run(rest),
    ["tokenizer", .. var rest] => TokenizerBench.Run(rest),
    _ => Usage(),
};

static int Usage()
{
    Console.Error.WriteLine("usage: TianGong.Bench training [config] [steps] [threads] | tokenizer [megabytes] [vocab]");
    return 2;
}
