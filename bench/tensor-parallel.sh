#!/usr/bin/env bash
# Tensor-parallel section of docs/benchmarks.md: tp=2 against one process for a gpt2 and a llama of the same size, on
# this machine (2 ranks on 2 cores: overhead, not speedup). For each family: tokens/s of one process (1 thread) and of
# tp=2 (1 thread per rank) over the last 10 of 40 steps, and the bytes each rank hands to MPI per step (40-step run minus
# 20-step run, divided by 20, so start-up and the final evaluation and checkpoint cancel), beside the planner's
# tensor-parallel term and the count expected from the implementation.
#   bench/tensor-parallel.sh            (OUT=runs/bench-tp by default; run it under `nice -n 10` on a shared machine)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLI="${CLI:-$ROOT/tiangong}"
OUT="${OUT:-$ROOT/runs/bench-tp}"
rm -rf "$OUT"; mkdir -p "$OUT"
export TIANGONG_HOME="${TIANGONG_HOME:-$OUT/home}"
# The made-up poem corpus of the tests (400 short documents).
python3 - "$OUT" <<'PY'
import json, random, sys
out = sys.argv[1]
chars = "春夏秋冬風花雪月山水江河日雲天地人心"
rng = random.Random(3)
docs = []
for i in range(400):
    lines = ["".join(rng.choice(chars) for _ in range(5)) + "，" + "".join(rng.choice(chars) for _ in range(5)) + "。" for _ in range(4)]
    docs.append(f"題{i % 7}\n" + "\n".join(lines))
open(f"{out}/poems.txt", "w").write("\n\n".join(docs))
models = {
    "gpt2": {"model_type": "gpt2", "n_embd": 128, "n_layer": 4, "n_head": 4, "n_positions": 128,
             "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0},
    "llama": {"model_type": "llama", "hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 4,
              "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 128, "tie_word_embeddings": True},
}
for family, model in models.items():
    for steps in (20, 40):
        config = {"model": model, "tokenizer": {"vocab_size": 300},
                  "data": {"corpus": f"{out}/poems.txt", "val_fraction": 0.05},
                  "training": {"seq_len": 64, "batch_size": 8, "max_steps": steps, "learning_rate": 1e-3, "warmup_steps": 2,
                               "eval_interval": steps, "eval_batches": 2, "log_interval": 10, "checkpoint_interval": steps, "threads": 1}}
        json.dump(config, open(f"{out}/{family}-{steps}.json", "w"), indent=2)
PY
sent() { grep -o "rank 1: [0-9.]* MB sent" "$1" | awk '{print $3}'; }
for family in gpt2 llama; do
  "$CLI" pretrain --config "$OUT/$family-40.json" --out "$OUT/$family-single" > "$OUT/$family-single.log"
  for steps in 20 40; do
    "$CLI" launch -n 2 -- pretrain --config "$OUT/$family-$steps.json" --out "$OUT/$family-tp2-$steps" --parallel tp=2 > "$OUT/$family-tp2-$steps.log"
  done
  python3 - "$OUT" "$family" "$(sent "$OUT/$family-tp2-40.log")" "$(sent "$OUT/$family-tp2-20.log")" <<'PY'
import json, sys
out, family, mb40, mb20 = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
def last_tps(run): return [json.loads(l) for l in open(f"{out}/{run}/metrics.jsonl")][-1]["tokens_per_s"]
c = json.load(open(f"{out}/{family}-40.json"))
m, t = c["model"], c["training"]
h = m.get("n_embd", m.get("hidden_size")); layers = m.get("n_layer", m.get("num_hidden_layers"))
tokens = t["batch_size"] * t["seq_len"]
act = tokens * h * 4  # one fp32 activation (B, T, C)
planner = 4 * layers * tokens * h * 2  # the planner's term: 4 all-reduces per layer of bf16 activations
# Implementation: per layer 2 forward all-reduces (row-parallel outputs) and one backward all-reduce per column-parallel
# layer (gpt2: c_attn, c_fc; llama: q, k, v, gate, up); embedding forward, LM-head input backward; 3 cross-entropy
# vectors (max, sum-exp, target logit) of B·T floats; the clipping norm (8 B) and the stop flag (4 B).
columns = 2 if family == "gpt2" else 5
expected = (layers * (2 + columns) + 2) * act + 3 * tokens * 4 + 8 + 4
print(json.dumps({"family": family, "single_tokens_per_s": round(last_tps(f"{family}-single")),
                  "tp2_tokens_per_s": round(last_tps(f"{family}-tp2-40")),
                  "measured_mb_per_step": round((mb40 - mb20) / 20, 4), "expected_mb_per_step": round(expected / 1e6, 4),
                  "planner_tp_mb_per_step": round(planner / 1e6, 4)}))
PY
done | tee "$OUT/results.jsonl"
uptime
