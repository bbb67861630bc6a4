using TianGong.Bench;

// Usage: TianGong.Bench <benchmark> [args...]
return args switch
{
    ["tokenizer", .. var rest] => TokenizerBench.Run(rest),
    _ => Usage(),
};

static int Usage()
{
    Console.Error.WriteLine("usage: TianGong.Bench tokenizer [megabytes=20] [vocab=8000]");
    return 2;
}
