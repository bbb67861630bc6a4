#!/usr/bin/env bash
# Fashion-MNIST table of docs/benchmarks.md: pretrain one backbone per method (same config, steps and seed), then
# linear probe and 1% / 10% label fine-tuning top-1, and the CPU time of each pretraining run.
#   bench/fashion-vision.sh [CONFIG] [STEPS] [SEEDS...]   (defaults: configs/fashion-resnet.json, 150, 1)
# Budget knobs (environment): TRAIN_LIMIT (labelled pool for probe and fine-tuning), TEST_LIMIT, EPOCHS.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLI="${CLI:-$ROOT/tiangong}"
CONFIG="${1:-$ROOT/configs/fashion-resnet.json}"; STEPS="${2:-150}"; shift $(( $# > 2 ? 2 : $# )) || true
SEEDS=("${@:-1}")
TRAIN_LIMIT="${TRAIN_LIMIT:-10000}"; TEST_LIMIT="${TEST_LIMIT:-2000}"; EPOCHS="${EPOCHS:-10}"
OUT="${OUT:-$ROOT/runs/bench-fashion}"
mkdir -p "$OUT"
# Every method pretrains on the same class-balanced subset (data.train_limit = TRAIN_LIMIT), so that CsMI's memory bank
# is filled (every image seen) before its neighbours are used (method.neighbour_warmup_steps = a third of the steps).
python3 - "$CONFIG" "$OUT/config.json" "$TRAIN_LIMIT" "$STEPS" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c.setdefault("data", {})["train_limit"] = int(sys.argv[3])
c.setdefault("method", {})["neighbour_warmup_steps"] = int(sys.argv[4]) // 3
json.dump(c, open(sys.argv[2], "w"), indent=2)
PY
CONFIG="$OUT/config.json"
evaluate() {   # $1 = --model DIR or --config FILE, $2 = its path, $3 = label, $4 = seed, $5 = pretraining CPU seconds
  local common=(--train-limit "$TRAIN_LIMIT" --test-limit "$TEST_LIMIT" --epochs "$EPOCHS" --seed "$4" --json)
  local probe one ten
  probe=$("$CLI" eval-vision "$1" "$2" --linear-probe "${common[@]}")
  one=$("$CLI" eval-vision "$1" "$2" --finetune --labels 1% "${common[@]}")
  ten=$("$CLI" eval-vision "$1" "$2" --finetune --labels 10% "${common[@]}")
  echo "{\"method\":\"$3\",\"seed\":$4,\"pretrain_cpu_s\":$5,\"probe\":$probe,\"finetune_1\":$one,\"finetune_10\":$ten}" | tee -a "$OUT/results.jsonl"
}
for seed in "${SEEDS[@]}"; do
  evaluate --config "$CONFIG" scratch "$seed" 0
  for method in moco csmi scan; do
    run="$OUT/$method-$seed"; rm -rf "$run"
    /usr/bin/time -f "%U %S" -o "$run.time" "$CLI" pretrain-vision --config "$CONFIG" --method "$method" --max-steps "$STEPS" --seed "$seed" --out "$run" > "$run.log"
    cpu=$(awk '{printf "%.0f", $1+$2}' "$run.time")
    evaluate --model "$run" "$method" "$seed" "$cpu"
  done
done
# The table of docs/benchmarks.md: mean ± sample standard deviation over the seeds in results.jsonl.
python3 - "$OUT/results.jsonl" <<'PY'
import json, statistics, sys
# A seed run again replaces its earlier line (results.jsonl is appended to).
rows = list({(r["method"], r["seed"]): r for r in map(json.loads, open(sys.argv[1]))}.values())
def cell(runs, key):
    values = [r[key]["accuracy"] * 100 for r in runs]
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"
print("| pretraining | seeds | linear probe top-1 | 1% labels top-1 | 10% labels top-1 | pretraining CPU s (mean) |")
print("|---|---|---|---|---|---|")
for method in dict.fromkeys(r["method"] for r in rows):
    runs = [r for r in rows if r["method"] == method]
    cpu = statistics.mean(r["pretrain_cpu_s"] for r in runs)
    print(f"| {method} | {len(runs)} | {cell(runs, 'probe')} | {cell(runs, 'finetune_1')} | {cell(runs, 'finetune_10')} | {cpu:.0f} |")
PY
