#!/usr/bin/env bash
# The GPU run of issues 10 and 12 in one go, on a machine with NVIDIA GPUs (results go to docs/benchmarks.md, "GPU"):
#   1. builds TianGong with the CUDA TorchSharp package (-p:TorchBackend=cuda, into artifacts-cuda/, beside the CPU build);
#   2. one GPU: measured bf16 matmul peak, training tokens/s and MFU of configs/poetry-gpu.json (GPT-2 1024x24, bf16,
#      batch 32x1024, halved until it fits) against the measured and the datasheet peak, decode tokens/s at batch 1 and 16;
#   3. two or more GPUs: every NCCL call checked on GPU tensors plus all-reduce bus bandwidth (gpu-nccl-check under
#      mpirun), then 20 steps of a tiny model on 1 GPU and on 2 GPUs with dp=2 over NCCL, losses side by side.
# Usage: bench/gpu.sh [DATASHEET_BF16_DENSE_TFLOPS]     e.g. bench/gpu.sh 989.4 (H100 SXM and H200: 989.4; A100: 312)
# Environment: STEPS (timed training steps, 20), CONFIG (configs/poetry-gpu.json), SKIP_BUILD=1 (reuse artifacts-cuda).
# The NCCL path has not run on a GPU yet (none was lent when it was written): this script is its first test.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
fail() { echo "bench/gpu.sh: $*" >&2; exit 1; }

# Fail fast, before building anything, where there is no GPU.
command -v nvidia-smi >/dev/null || fail "no NVIDIA driver here (nvidia-smi not found): this benchmark needs a machine with an NVIDIA GPU"
GPUS=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | wc -l)
[[ "$GPUS" -ge 1 ]] || fail "nvidia-smi lists no GPU (driver not loaded?)"
DATASHEET="${1:-0}"
STEPS="${STEPS:-20}"
CONFIG="${CONFIG:-configs/poetry-gpu.json}"
ART="$ROOT/artifacts-cuda"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

echo "== machine"
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores; commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"

source "$ROOT/scripts/setup.sh" # ensure_glibcxx, ensure_icu, ensure_mpi: the same system steps as ./tiangong
ensure_glibcxx
ensure_icu
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  echo "== build (TorchSharp-cuda-linux; the first restore downloads libtorch with CUDA, several GB)"
  for project in src/TianGong.Cli/TianGong.Cli.csproj bench/TianGong.Bench/TianGong.Bench.csproj; do
    dotnet build "$project" -c Release -nologo -v q -clp:ErrorsOnly -p:TorchBackend=cuda -p:ArtifactsPath="$ART"
  done
fi
BENCH=(dotnet "$ART/bin/TianGong.Bench/release/TianGong.Bench.dll")
CLI="$ART/bin/TianGong.Cli/release/TianGong.Cli"

echo "== 1 GPU: bf16 matmul peak, training MFU, decode ($CONFIG, $STEPS steps)"
"${BENCH[@]}" gpu config="$CONFIG" steps="$STEPS" datasheet-tflops="$DATASHEET"

if [[ "$GPUS" -lt 2 ]]; then
  echo "== NCCL: skipped (1 GPU; the 2-GPU check and data-parallel run need two)"
  exit 0
fi
ldconfig -p 2>/dev/null | grep -q 'libnccl\.so\.2' || compgen -G '/usr/lib/*/libnccl.so.2' >/dev/null || compgen -G '/usr/local/cuda*/lib*/libnccl.so.2' >/dev/null ||
  fail "libnccl.so.2 not found: install NCCL (NVIDIA's CUDA apt repository: apt-get install libnccl2; see the README's parallel section)"
ensure_mpi
ROOTFLAG=(); [[ $(id -u) -eq 0 ]] && ROOTFLAG=(--allow-run-as-root)

echo "== 2 GPUs: every NCCL call on GPU tensors, all-reduce bus bandwidth"
mpirun -n 2 "${ROOTFLAG[@]}" --bind-to none "${BENCH[@]}" gpu-nccl-check

echo "== 2 GPUs: 20 steps of a tiny model, 1 GPU vs. dp=2 over NCCL (same global batch: the losses should agree closely)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# An offline corpus (this repository's docs and sources), so that no dataset download is needed.
cat README.md docs/*.md > "$WORK/corpus.txt"
find src -name '*.cs' -exec cat {} + >> "$WORK/corpus.txt"
# The tiny model of bench/gpu-tiny-llama.json (shared with bench/gpu-with-pytorch.sh) on that corpus.
sed "s|@CORPUS@|$WORK/corpus.txt|" bench/gpu-tiny-llama.json > "$WORK/tiny.json"
export TIANGONG_HOME="$WORK/home"
"$CLI" pretrain --config "$WORK/tiny.json" --device cuda --out "$WORK/gpu1"
"$CLI" launch -n 2 -- pretrain --config "$WORK/tiny.json" --device cuda --parallel dp=2 --out "$WORK/gpu2"
losses() { grep '"train_loss"' "$1/metrics.jsonl" | sed -E 's/.*"step":([0-9]+).*"train_loss":([-0-9.e+]+).*/\1 \2/'; }
echo "step | train loss, 1 GPU | train loss, dp=2 over NCCL"
join <(losses "$WORK/gpu1" | sort -k1,1) <(losses "$WORK/gpu2" | sort -k1,1) | sort -n | awk '{ printf "%s | %s | %s\n", $1, $2, $3 }'
