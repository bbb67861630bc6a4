#!/bin/sh
# Compression and deployment benchmark (docs/benchmarks.md, "Compression and deployment"): a briefly pretrained
# poetry-small, its bf16 / int8 / int4 / half-depth / half-depth+distilled / MLP-pruned variants made with the CLI,
# then file size, validation perplexity and decode speed of each, and streamed (--max-memory) vs in-memory decoding.
# Run from the repository root: sh bench/compression.sh [pretrain-steps=60] [distill-steps=10]
set -eu
STEPS=${1:-60}
DISTILL=${2:-10}
R=${TIANGONG_BENCH_DIR:-/tmp/tg-bench-compress}
T="nice -n 10 ./tiangong"
BENCH="nice -n 10 dotnet artifacts/bin/TianGong.Bench/release/TianGong.Bench.dll"
mkdir -p "$R"
# poetry-small's model and data with a batch small enough to pretrain briefly on 2 shared cores.
python3 - "$R" "$STEPS" <<'PY'
import json, sys
c = json.load(open('configs/poetry-small.json'))
c['training'].update(seq_len=128, batch_size=8, grad_accum=1, max_steps=int(sys.argv[2]), warmup_steps=10,
                     eval_interval=100, eval_batches=4, checkpoint_interval=100, log_interval=10)
json.dump(c, open(sys.argv[1] + '/poetry-small-brief.json', 'w'), indent=2, ensure_ascii=False)
PY
[ -f "$R/fp32/model.safetensors" ] || $T pretrain --config "$R/poetry-small-brief.json" --out "$R/fp32"
# Calibration text for pruning: 300 Tang poems from one file of the corpus (not the validation spread).
python3 - "$R" <<'PY'
import json, os, sys
src = os.path.expanduser('~/.cache/tiangong/datasets/chinese-poetry/dist/quantangshi/poet.tang.1000.json')
poems = json.load(open(src))[:300]
open(sys.argv[1] + '/calibration.txt', 'w').write('\n\n'.join(p['title'] + '\n' + '\n'.join(p['paragraphs']) for p in poems))
PY
[ -d "$R/bf16" ] || $T convert --model "$R/fp32" --dtype bfloat16 --out "$R/bf16"
[ -d "$R/int8" ] || $T quantize --model "$R/fp32" --bits 8 --out "$R/int8"
[ -d "$R/int4" ] || $T quantize --model "$R/fp32" --bits 4 --group-size 128 --out "$R/int4"
[ -d "$R/half" ] || $T extract --model "$R/fp32" --keep-layers 3 --out "$R/half"
[ -d "$R/half-distilled" ] || $T distill --teacher "$R/fp32" --student "$R/half" --data chinese-poetry --collections tang,song \
    --out "$R/half-distilled" --max-steps "$DISTILL" --batch-size 8 --seq-len 128
[ -d "$R/mlp-half" ] || $T extract --model "$R/fp32" --mlp-keep 0.5 --calibration "$R/calibration.txt" --out "$R/mlp-half"
uptime
$BENCH compression fp32="$R/fp32" bf16="$R/bf16" int8="$R/int8" int4="$R/int4" "half depth=$R/half" \
    "half depth + distilled=$R/half-distilled" "MLP pruned to 50%=$R/mlp-half"
$BENCH offload configs/poetry-small.json 24 16
uptime
