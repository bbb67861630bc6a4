#!/usr/bin/env bash
# Pipeline parallelism on this machine: throughput of pp=2 (1F1B and GPipe) and of dp=2 × pp=2 on four ranks (with and
# without ZeRO-1) against one process on the same global batches, the planner's prediction of the pp=2 step time and
# bubble, calibrated on the one-process run, and the parameter and optimizer memory each rank holds (printed by the ranks).
# Usage (from the repository root, after ./tiangong has built the CLI): bench/pipeline.sh [steps=30] [corpus=poems.txt]
# Results go to docs/benchmarks.md ("Pipeline parallelism and recomputation").
set -euo pipefail
STEPS=${1:-30}
OUT=$(mktemp -d /tmp/tiangong-pipeline-bench.XXXXXX)
CLI=${CLI:-./tiangong}
export TIANGONG_HOME=${TIANGONG_HOME:-$OUT/home}
echo "machine: $(nproc) cores; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

# A corpus of random 5-character lines, and a Llama of 4 layers (hidden 128), batch 8 × 128 tokens, one thread per process.
python3 - "$OUT" "$STEPS" <<'PY'
import json, random, sys
out, steps = sys.argv[1], int(sys.argv[2])
chars = "春夏秋冬風花雪月山水江河日雲天地人心"
rng = random.Random(3)
docs = []
for i in range(3000):
    lines = ["".join(rng.choice(chars) for _ in range(5)) + "，" + "".join(rng.choice(chars) for _ in range(5)) + "。" for _ in range(4)]
    docs.append(f"題{i % 7}\n" + "\n".join(lines))
open(f"{out}/poems.txt", "w").write("\n\n".join(docs))
config = {
    "model": {"model_type": "llama", "hidden_size": 128, "intermediate_size": 344, "num_hidden_layers": 4,
              "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 128, "tie_word_embeddings": True},
    "tokenizer": {"vocab_size": 300},
    "data": {"corpus": f"{out}/poems.txt", "val_fraction": 0.05},
    "training": {"seq_len": 128, "batch_size": 8, "max_steps": steps, "learning_rate": 1e-3, "warmup_steps": 2,
                 "eval_interval": 100000, "eval_batches": 1, "log_interval": 1, "checkpoint_interval": 100000, "threads": 1},
}
json.dump(config, open(f"{out}/config.json", "w"))
PY

# Seconds per step after the first 5 (start-up, first allocations), from metrics.jsonl's elapsed_s.
step_seconds() {
  python3 - "$1/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
a = next(r for r in rows if r["step"] == 5); b = rows[-1]
print((b["elapsed_s"] - a["elapsed_s"]) / (b["step"] - a["step"]))
PY
}

nice -n 10 $CLI pretrain --config "$OUT/config.json" --out "$OUT/single" > "$OUT/single.log" 2>&1
nice -n 10 $CLI launch -n 2 -- pretrain --config "$OUT/config.json" --out "$OUT/pp2-1f1b" --parallel pp=2,micro_batches=4,schedule=1f1b > "$OUT/pp2-1f1b.log" 2>&1
nice -n 10 $CLI launch -n 2 -- pretrain --config "$OUT/config.json" --out "$OUT/pp2-gpipe" --parallel pp=2,micro_batches=4,schedule=gpipe > "$OUT/pp2-gpipe.log" 2>&1
# Interleaved: two chunks of one layer per rank (rank 0: layers 0 and 2, rank 1: layers 1 and 3), interleaved 1F1B and breadth-first.
nice -n 10 $CLI launch -n 2 -- pretrain --config "$OUT/config.json" --out "$OUT/pp2-v2" --parallel pp=2,virtual_stages=2,micro_batches=4,schedule=1f1b > "$OUT/pp2-v2.log" 2>&1
nice -n 10 $CLI launch -n 2 -- pretrain --config "$OUT/config.json" --out "$OUT/pp2-v2-bf" --parallel pp=2,virtual_stages=2,micro_batches=4,schedule=gpipe > "$OUT/pp2-v2-bf.log" 2>&1
# Four ranks on two cores (the launcher oversubscribes): two data-parallel replicas of the two-stage pipeline.
nice -n 10 $CLI launch -n 4 -- pretrain --config "$OUT/config.json" --out "$OUT/dp2pp2" --parallel dp=2,pp=2,micro_batches=2 > "$OUT/dp2pp2.log" 2>&1
nice -n 10 $CLI launch -n 4 -- pretrain --config "$OUT/config.json" --out "$OUT/dp2pp2-zero1" --parallel dp=2,pp=2,micro_batches=2,zero=1 > "$OUT/dp2pp2-zero1.log" 2>&1
# And a two-stage pipeline of tensor-parallel pairs.
nice -n 10 $CLI launch -n 4 -- pretrain --config "$OUT/config.json" --out "$OUT/tp2pp2" --parallel tp=2,pp=2,micro_batches=4 > "$OUT/tp2pp2.log" 2>&1
single=$(step_seconds "$OUT/single"); onef=$(step_seconds "$OUT/pp2-1f1b"); gpipe=$(step_seconds "$OUT/pp2-gpipe")
interleaved=$(step_seconds "$OUT/pp2-v2"); breadth=$(step_seconds "$OUT/pp2-v2-bf"); dp2pp2=$(step_seconds "$OUT/dp2pp2"); dp2pp2z=$(step_seconds "$OUT/dp2pp2-zero1"); tp2pp2=$(step_seconds "$OUT/tp2pp2")

# The planner, calibrated once: the device TFLOP/s that makes it predict the measured one-process step, then asked for
# pp=2 with micro-batches of 2 rows (4 micro-batches) at that speed and a shared-memory link of 5 GB/s.
cp "$OUT/config.json" "$OUT/model.json"
python3 - "$OUT/model.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); m = c["model"]; m["vocab_size"] = c["tokenizer"]["vocab_size"]; json.dump(m, open(sys.argv[1], "w"))
PY
plan() { $CLI plan --model "$OUT/model.json" --global-batch 8 --seq 128 --devices-per-node 2 --intra-node-gbps 5 --json "$@"; }
unit=$(plan --devices 1 --device-tflops 1 --layout dp=1,micro_batch=8 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["step_s"])')
tflops=$(python3 -c "print($unit / $single)")
plan --devices 2 --device-tflops "$tflops" --layout pp=2,dp=1,micro_batch=2 > "$OUT/plan.json"

python3 - "$single" "$onef" "$gpipe" "$tflops" "$OUT" "$dp2pp2" "$dp2pp2z" "$tp2pp2" "$interleaved" "$breadth" <<'PY'
import json, re, sys
single, onef, gpipe, tflops, out = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
dp2pp2, dp2pp2z, tp2pp2, interleaved, breadth = (float(a) for a in sys.argv[6:11])
tokens = 8 * 128
plan = json.load(open(f"{out}/plan.json"))[0]
def waits(name):
    text = open(f"{out}/{name}.log").read()
    # Long lines wrap in the job's output: read the two numbers only.
    found = sorted(re.findall(r"rank (\d+): stage (\d): ([\d.]+) s in training schedules, ([\d.]+) s of it waiting", text))
    return ", ".join(f"rank {r} (stage {s}): {float(w) / float(t):.0%}" for r, s, t, w in found)

def losses(name):
    return [json.loads(l)["train_loss"] for l in open(f"{out}/{name}/metrics.jsonl")]

reference = losses("single")
for name in ["pp2-1f1b", "pp2-gpipe", "pp2-v2", "pp2-v2-bf", "dp2pp2", "dp2pp2-zero1", "tp2pp2"]:
    print(f"{name}: largest loss difference from one process over {len(reference)} steps: {max(abs(a - b) for a, b in zip(reference, losses(name))):.1e}")
print(f"calibration: {tflops * 1e3:.1f} GFLOP/s effective per process (one thread)")
print("| run | s/step | tokens/s | vs one process | waiting for the neighbour (measured bubble + transfers) |")
print("|---|---|---|---|---|")
print(f"| one process, 1 thread | {single:.3f} | {tokens / single:,.0f} | 1.00× | — |")
print(f"| pp=2, 1F1B, 4 micro-batches | {onef:.3f} | {tokens / onef:,.0f} | {single / onef:.2f}× | {waits('pp2-1f1b')} |")
print(f"| pp=2, GPipe, 4 micro-batches | {gpipe:.3f} | {tokens / gpipe:,.0f} | {single / gpipe:.2f}× | {waits('pp2-gpipe')} |")
print(f"| pp=2 interleaved 1F1B, 2 chunks per rank, 4 micro-batches | {interleaved:.3f} | {tokens / interleaved:,.0f} | {single / interleaved:.2f}× | {waits('pp2-v2')} |")
print(f"| pp=2 interleaved breadth-first, 2 chunks per rank, 4 micro-batches | {breadth:.3f} | {tokens / breadth:,.0f} | {single / breadth:.2f}× | {waits('pp2-v2-bf')} |")
print(f"| dp=2 × pp=2 (4 ranks), 1F1B, 2 micro-batches per replica | {dp2pp2:.3f} | {tokens / dp2pp2:,.0f} | {single / dp2pp2:.2f}× | {waits('dp2pp2')} |")
print(f"| dp=2 × pp=2 (4 ranks), zero=1 | {dp2pp2z:.3f} | {tokens / dp2pp2z:,.0f} | {single / dp2pp2z:.2f}× | {waits('dp2pp2-zero1')} |")
print(f"| tp=2 × pp=2 (4 ranks), 1F1B, 4 micro-batches | {tp2pp2:.3f} | {tokens / tp2pp2:,.0f} | {single / tp2pp2:.2f}× | {waits('tp2pp2')} |")
print(f"| planner, pp=2, 4 micro-batches | {plan['step_s']:.3f} (predicted) | {plan['tokens_per_s']:,.0f} | {single / plan['step_s']:.2f}× | bubble {plan['bubble']:.1%} (predicted) |")

# Per-rank memory: the parameters each rank keeps after the others' stages were freed, and its optimizer state.
print()
print("| layout | rank | stage | parameters in memory | share of the model | optimizer state |")
print("|---|---|---|---|---|---|")
for name, layout in [("pp2-1f1b", "pp=2"), ("pp2-v2", "pp=2, 2 chunks per rank"), ("dp2pp2", "dp=2 × pp=2"), ("dp2pp2-zero1", "dp=2 × pp=2, zero=1"), ("tp2pp2", "tp=2 × pp=2")]:
    text = open(f"{out}/{name}.log").read()
    params = {int(r): (float(h), float(w), int(s)) for r, h, w, s in
              re.findall(r"rank (\d+): parameters ([\d.]+) of ([\d.]+) MB in memory \(stage (\d+) of", text)}
    zero = {int(r): float(mb) for mb, r in re.findall(r"optimizer state ([\d.]+) MB on rank (\d+)", text)}
    if name == "pp2-1f1b":
        whole = next(iter(params.values()))[1]
        print(f"| one process | 0 | — | {whole:.3f} MB | 100% | {2 * whole:.3f} MB (AdamW moments) |")
    for rank in sorted(params):
        held, whole, stage = params[rank]
        optimizer = f"{zero[rank]:.3f} MB (ZeRO-1)" if rank in zero else f"{2 * held:.3f} MB (AdamW moments)"
        print(f"| {layout} | {rank} | {stage} | {held:.3f} MB | {held / whole:.0%} | {optimizer} |")
PY
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "runs in $OUT"
