#!/usr/bin/env bash
# Issue 12's GPU benchmark on a machine that has PyTorch with CUDA but no way to NuGet (the lent GPU machines of this
# project reach no network; bench/gpu.sh needs TorchSharp-cuda-linux's several GB of libtorch from NuGet). TianGong's
# CPU build is all managed code except LibTorchSharp, so it runs on that machine's own libtorch (PyTorch's torch/lib),
# loaded through LD_LIBRARY_PATH, once the .NET runtime, the build and LibTorchSharp travel with it.
#
#   here:  bench/gpu-with-pytorch.sh pack DIR            builds Release, writes DIR (about 40 MB: .NET runtime, bench,
#                                                        CLI, LibTorchSharp, this script, gpu-peer.py, the tiny
#                                                        model's config and a text corpus)
#   there: DIR/gpu-with-pytorch.sh run [DATASHEET_TFLOPS] (python3 with torch; 989.4 for an H100 SXM or an H200)
#
# run: checks that every libtorch symbol LibTorchSharp (built for libtorch 2.10) needs is in this libtorch, then
# `TianGong.Bench gpu` (matmul peak, bf16 training MFU, decode agreement and speed), the CLI's pretrain + generate on
# the GPU, and the peer (bench/gpu-peer.py: transformers on the same GPU). Results: docs/benchmarks.md, "GPU".
# DEVICE=cpu TORCHLIB=DIR runs the TianGong parts on the CPU with that libtorch (a dry run of the script).
set -euo pipefail
fail() { echo "bench/gpu-with-pytorch.sh: $*" >&2; exit 1; }
mode="${1:-}"; dir="${2:-}"

if [[ "$mode" == pack ]]; then
  [[ -n "$dir" ]] || fail "usage: bench/gpu-with-pytorch.sh pack DIR"
  ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"; cd "$ROOT"
  for project in src/TianGong.Cli/TianGong.Cli.csproj bench/TianGong.Bench/TianGong.Bench.csproj; do
    dotnet build "$project" -c Release -nologo -v q -clp:ErrorsOnly
  done
  DOTNET_DIR="$(dirname "$(readlink -f "$(command -v dotnet)")")"
  runtime=$(dotnet --list-runtimes | awk '$1 == "Microsoft.NETCore.App" && $2 ~ /^10\./ { v = $2 } END { print v }')
  [[ -n "$runtime" ]] || fail "no .NET 10 runtime found by dotnet --list-runtimes"
  mkdir -p "$dir"; stage="$(mktemp -d)"; trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage/app"
  B=artifacts/bin/TianGong.Bench/release C=artifacts/bin/TianGong.Cli/release
  # The managed assemblies and LibTorchSharp, flat, without deps.json: then the host loads every assembly beside the
  # entry point and dlopen finds libtorch through LD_LIBRARY_PATH, not in the CPU libtorch package.
  cp "$B"/*.dll "$B"/TianGong.Bench.runtimeconfig.json "$stage/app/"
  cp -n "$C"/*.dll "$stage/app/"; cp "$C"/TianGong.Cli.runtimeconfig.json "$stage/app/"
  cp "$C"/runtimes/linux-x64/native/lib{LibTorchSharp,SkiaSharp,HarfBuzzSharp}.so "$stage/app/"
  tar -C "$stage" -cf - app | xz -9 -T0 > "$dir/app.tar.xz"
  tar -C "$DOTNET_DIR" -cf - dotnet host/fxr "shared/Microsoft.NETCore.App/$runtime" "shared/Microsoft.AspNetCore.App/$runtime" | xz -9 -T0 > "$dir/dotnet.tar.xz"
  cp bench/gpu-with-pytorch.sh bench/gpu-peer.py bench/gpu-tiny-llama.json configs/poetry-gpu.json "$dir/"
  cat README.md docs/*.md > "$dir/corpus.txt"
  echo "packed $(du -sh "$dir" | cut -f1) into $dir (commit $(git rev-parse --short HEAD)); there: $dir/gpu-with-pytorch.sh run 989.4"
  exit 0
fi

[[ "$mode" == run ]] || fail "usage: bench/gpu-with-pytorch.sh pack DIR | run [DATASHEET_TFLOPS]"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DATASHEET="${2:-0}"; DEVICE="${DEVICE:-cuda}"
W="$(mktemp -d)"; trap 'rm -rf "$W"' EXIT
echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
echo "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ -z "${TORCHLIB:-}" ]]; then
  python3 -c "import torch; print('PyTorch', torch.__version__, 'CUDA', torch.version.cuda)" || fail "python3 with torch not found"
  TORCHLIB="$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
fi
mkdir -p "$W/dotnet"; tar -xJf "$HERE/dotnet.tar.xz" -C "$W/dotnet"; tar -xJf "$HERE/app.tar.xz" -C "$W"
export DOTNET_ROOT="$W/dotnet" DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 TIANGONG_HOME="$W/home"
export LD_LIBRARY_PATH="$TORCHLIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
ldconfig -p 2>/dev/null | grep -q libicuuc || export DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1
DN="$W/dotnet/dotnet"; APP="$W/app"

echo "== LibTorchSharp's libtorch symbols in $TORCHLIB"
nm -D --undefined-only "$APP/libLibTorchSharp.so" | awk '{ print $2 }' | sort -u > "$W/needed"
for lib in "$TORCHLIB"/libtorch*.so "$TORCHLIB"/libc10*.so; do nm -D --defined-only "$lib" | awk '{ print $3 }'; done | sort -u > "$W/defined"
# Thread-local initialisers (_ZTH) are weak references LibTorchSharp resolves itself.
comm -23 "$W/needed" "$W/defined" | grep -E 'c10|at|torch' | grep -v '^_ZNSt\|^_ZSt\|^_ZTH\|GLIBC\|^__' > "$W/missing" || true
if [[ -s "$W/missing" ]]; then
  head -20 "$W/missing" | c++filt
  fail "$(wc -l < "$W/missing") libtorch symbols that LibTorchSharp needs are not in this libtorch: it is not ABI-compatible with TorchSharp 0.107 (libtorch 2.10); use bench/gpu.sh with the CUDA package"
fi
echo "all found"

echo "== TianGong.Bench gpu (poetry-gpu.json: GPT-2 1024x24, bf16)"
"$DN" "$APP/TianGong.Bench.dll" gpu device="$DEVICE" config="${CONFIG:-$HERE/poetry-gpu.json}" ${STEPS:+steps=$STEPS} datasheet-tflops="$DATASHEET" || echo "(a part failed: above)"

echo "== CLI: pretrain 20 steps of a tiny Llama on $DEVICE (an offline corpus: the README and docs), then generate"
sed "s|@CORPUS@|$HERE/corpus.txt|" "$HERE/gpu-tiny-llama.json" > "$W/tiny.json"
"$DN" "$APP/TianGong.Cli.dll" pretrain --config "$W/tiny.json" --device "$DEVICE" --out "$W/tiny"
"$DN" "$APP/TianGong.Cli.dll" generate --model "$W/tiny" --device "$DEVICE" --prompt "The model" --max-new-tokens 32 --seed 1

if [[ "$DEVICE" == cuda ]]; then
  echo "== peer: transformers on the same GPU"
  PYTHONUNBUFFERED=1 python3 "$HERE/gpu-peer.py"
fi
