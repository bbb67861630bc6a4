// Benchmarks: dotnet run -c Release --project bench/TianGong.Bench -- <name> [args]
return args.FirstOrDefault() switch
{
    _ => Usage(),
};

static int Usage()
{
    Console.Error.WriteLine("usage: TianGong.Bench <benchmark> [args]");
    return 2;
}
