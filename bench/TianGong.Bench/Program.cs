// Benchmarks, run from the repository root (results and commands go to docs/benchmarks.md):
//   dotnet run -c Release --project bench/TianGong.Bench -- training [config=configs/poetry-small.json] [steps=5] [threads=cores]
//   dotnet run -c Release --project bench/TianGong.Bench -- tokenizer [megabytes=20] [vocab=8000]
//   dotnet run -c Release --project bench/TianGong.Bench -- serving [config=configs/poetry-small.json] [requests-per-stream=4] [max-tokens=64] [levels=1,4,8,16|0|cache|engine|after-forward] [--greedy] [--levels-only | --served-only | --rounds=N (levels served then raw, N alternated rounds, median ratios)] [--model-vocab=N]
//   dotnet run -c Release --project bench/TianGong.Bench -- interop [threads=cores]
//   dotnet run -c Release --project bench/TianGong.Bench -- quantization [config=configs/poetry-small.json] [steps=32] [vocab=16384]
//   dotnet run -c Release --project bench/TianGong.Bench -- onnx [config=configs/poetry-small.json] [steps=32] [vocab=16384]
//   dotnet run -c Release --project bench/TianGong.Bench -- contention [config=configs/poetry-tiny.json] [steps=5]
//   dotnet run -c Release --project bench/TianGong.Bench -- multilora [config=configs/poetry-tiny.json] [rank=16] [targets=all-linear] [streams=16] [max-tokens=64] [rounds=5]
//   dotnet run -c Release --project bench/TianGong.Bench -- recompute [hidden=256] [layers=8] [seq=512] [batch=8] [threads=2]
//   dotnet run -c Release --project bench/TianGong.Bench -- compression name=DIR ...   (bench/compression.sh makes the folders)
//   dotnet run -c Release --project bench/TianGong.Bench -- offload [config=configs/poetry-small.json] [layers=24] [steps=24]
//   dotnet run -c Release --project bench/TianGong.Bench -- profile [config=configs/poetry-small.json] [steps=2] [threads=cores] [batch=config's]
//   dotnet run -c Release --project bench/TianGong.Bench -- stream [megabytes=256] [threads=2] [config=configs/poetry-small.json] [steps=32]
//   dotnet run -c Release --project bench/TianGong.Bench -- align   (the serving engine's start-up copy of a 2 GB model's matrices)
//   bench/gpu.sh [DATASHEET_BF16_TFLOPS]   (gpu [config=configs/poetry-gpu.json] [steps=20] [datasheet-tflops=X] [device=cuda] [batch=N] [dtype=bfloat16]; gpu-nccl-check under mpirun)
//   dotnet run -c Release --project bench/TianGong.Bench -- decode-matmul [config=configs/poetry-small.json] [threads=2] [rows=1,4,16,32] [rounds=3]
//   dotnet run -c Release --project bench/TianGong.Bench -- decode-threads [config=configs/poetry-small.json] [steps=32] [rounds=7] [batches=1,16] [--busy|--busy-only]
//   dotnet run -c Release --project bench/TianGong.Bench -- decode-profile [config=configs/poetry-small.json] [steps=32] [threads=2] [rounds=5] [batches=1,16] [--shapes] [--model-only]
using TianGong.Bench;

var waitPolicy = TianGong.TorchRuntime.ConfigureBeforeFirstUse(); // before the first torch call
Console.Error.WriteLine($"OMP_WAIT_POLICY: {waitPolicy}");

return args switch
{
    ["training", .. var rest] => TrainingBench.Run(rest),
    ["tokenizer", .. var rest] => TokenizerBench.Run(rest),
    ["serving", .. var rest] => ServingBench.Run(rest),
    ["interop", .. var rest] => InteropBench.Run(rest),
    ["quantization", .. var rest] => QuantizationBench.Run(rest),
    ["contention", .. var rest] => ContentionBench.Run(rest),
    ["multilora", .. var rest] => MultiLoraBench.Run(rest),
    ["onnx", .. var rest] => OnnxBench.Run(rest),
    ["recompute", .. var rest] => RecomputeBench.Run(rest),
    ["recompute-child", .. var rest] => RecomputeBench.RunChild(rest),
    ["compression", .. var rest] => CompressionBench.Run(rest),
    ["offload", .. var rest] => CompressionBench.RunOffload(rest),
    ["offload-child", .. var rest] => CompressionBench.RunOffloadChild(rest),
    ["profile", .. var rest] => ProfileBench.Run(rest),
    ["stream", .. var rest] => StreamBench.Run(rest),
    ["align", .. var rest] => AlignBench.Run(rest),
    ["gpu", .. var rest] => GpuBench.Run(rest),
    ["gpu-nccl-check"] => GpuBench.RunNcclCheck(),
    ["decode-profile", .. var rest] => DecodeProfileBench.Run(rest),
    ["decode-matmul", .. var rest] => DecodeMatmulBench.Run(rest),
    ["decode-threads", .. var rest] => DecodeThreadsBench.Run(rest),
    ["quantized-gemv", .. var rest] => QuantizedGemvBench.Run(rest),
    // Started by interop itself, one fresh process per load measurement; not in the usage line.
    ["interop-load", .. var rest] => InteropBench.RunLoadChild(rest),
    _ => Usage(),
};

static int Usage()
{
    Console.Error.WriteLine("usage: TianGong.Bench training [config] [steps] [threads] | tokenizer [megabytes] [vocab] | serving [config] [requests-per-stream] [max-tokens] | interop [threads] | contention [config] [steps] | multilora [config] [rank] [targets] [streams] [max-tokens] [rounds] | profile [config] [steps] [threads] [batch] | stream [megabytes] [threads] [config] [steps]");
    return 2;
}
