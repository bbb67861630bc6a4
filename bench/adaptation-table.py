#!/usr/bin/env python3
"""Tabulates bench/adaptation.sh's results.jsonl: accuracy (mean ± std over seeds, n = runs) per task, method and k,
then trainable share, peak RSS and step time of each fine-tuning method relative to full fine-tuning with the head."""
import collections
import json
import statistics
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "runs/adaptation/results.jsonl"
rows, seen = [], set()
for line in open(path, encoding="utf-8"):
    if line.strip():
        r = json.loads(line)
        key = (r["bench_task"], r["bench_method"], r["k"], r["seed"])
        if key not in seen:  # a cell run twice (overlapping runners) counts once: the first result
            seen.add(key)
            rows.append(r)
methods = ["zero-shot", "probe", "lora", "prompt", "ptuning-v2", "head"]
names = {"zero-shot": "zero-shot prompt", "probe": "linear probe", "lora": "LoRA (prompt-based)", "prompt": "prompt tuning",
         "ptuning-v2": "P-tuning v2", "head": "full FT + head"}


def cell(values):
    if not values:
        return "–"
    mean = 100 * statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.1f} (n=1)"
    return f"{mean:.1f} ± {100 * statistics.stdev(values):.1f}" + ("" if len(values) == 3 else f" (n={len(values)})")


for task in sorted({r["bench_task"] for r in rows}):
    mine = [r for r in rows if r["bench_task"] == task]
    shots = sorted({r["k"] for r in mine if r["k"] > 0})
    examples = mine[0]["examples"]
    print(f"\n### {task} (accuracy %, {examples} test rows)\n")
    print("| method | " + " | ".join("zero-shot" if k == 0 else f"k = {k}" for k in [0] + shots) + " |")
    print("|---" * (len(shots) + 2) + "|")
    acc = collections.defaultdict(list)
    for r in mine:
        acc[(r["bench_method"], r["k"])].append(r["accuracy"])
    for m in methods:
        if not any(key[0] == m for key in acc):
            continue
        print(f"| {names[m]} | " + " | ".join(cell(acc.get((m, k), [])) for k in [0] + shots) + " |")

    cost = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in mine:
        if "trainable" in r:
            cost[r["bench_method"]]["share"].append(r["trainable"] / r["parameters"])
            cost[r["bench_method"]]["rss"].append(r["peak_rss_mb"])
            if "step_s" in r:
                cost[r["bench_method"]]["step"].append(r["step_s"])
    if "head" not in cost:
        continue
    base = {key: statistics.median(v) for key, v in cost["head"].items()}
    print(f"\n| method ({task}) | trainable share | peak RSS (MB) | vs full | step time (s) | vs full |\n|---|---|---|---|---|---|")
    for m in methods:
        if m not in cost:
            continue
        c = {key: statistics.median(v) for key, v in cost[m].items()}
        step = f"{c['step']:.2f} | {c['step'] / base['step']:.2f}×" if "step" in c and "step" in base else "– | –"
        print(f"| {names[m]} | {100 * c['share']:.3f}% | {c['rss']:.0f} | {c['rss'] / base['rss']:.2f}× | {step} |")
