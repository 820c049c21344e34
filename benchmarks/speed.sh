#!/usr/bin/env bash
# The README's speed table: Tessera's training and inference speed for the tiny and small presets at their default
# input sizes, next to the identical model in PyTorch (benches/reference) run on the same cores in the same run,
# plus detection at 128 px with tiny (the issue's < 50 ms target). Prints a Markdown table and keeps the JSON.
#
#   cargo build --release && benches/reference/setup.sh && benchmarks/speed.sh
#   BUDGET=20 CORES=0,1 THREADS=2 OUT=/tmp/speed benchmarks/speed.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CORES=${CORES:-0,1} THREADS=${THREADS:-2} BUDGET=${BUDGET:-10}
export OUT=${OUT:-$(mktemp -d)}
BIN=${BIN:-target/release/tessera}

# 1. Side by side with the reference (equality check first), tiny and small, train and infer.
PRESETS="tiny small" WHAT="train infer" benches/compare.sh | tee "$OUT/compare.txt"

# 2. Detection at 128 px (tiny preset, patch 8 -> 256 patches), batch 1 and 8.
RAYON_NUM_THREADS=$THREADS taskset -c "$CORES" "$BIN" bench infer --preset tiny --image-size 128 --budget-s "$BUDGET" \
    --skip-no-cache --json 2>/dev/null > "$OUT/tessera-infer-tiny128.json"

# 3. The table.
python3 - "$OUT" <<'PYEOF'
import json, os, sys
out = sys.argv[1]
def load(n):
    p = os.path.join(out, n)
    return json.load(open(p)) if os.path.exists(p) and os.path.getsize(p) else None
peak = load("tessera-peak.json")
m = (peak or {}).get("machine", {})
print()
print(f"Machine: {m.get('cpu', '?')}, {m.get('threads', '?')} threads (taskset {os.environ.get('CORES')}); "
      f"candle f32 matmul peak {peak.get('matmul_peak_gflops', 0):.0f} GFLOP/s" if peak else "")
print()
print("| preset | measurement | Tessera | PyTorch 1.13 (same model) | Tessera / PyTorch |")
print("|---|---|---|---|---|")
for p in ("tiny", "small"):
    t, r = load(f"tessera-train-{p}.json"), load(f"pytorch-train-{p}.json")
    if t and r:
        tp = t["presets"][0]
        rr = {x["objective"]: x for x in r["results"]}
        for x in tp["results"]:
            y = rr[x["objective"]]
            print(f"| {p} {tp['image_size']}px | train {x['objective']} (batch {x['batch']}, seq {x['seq_len']}): steps/s, images/s, GFLOP/s "
                  f"| {x['steps_per_s']:.2f}, {x['images_per_s']:.0f}, {x['gflops']:.0f} | {y['steps_per_s']:.2f}, {y['images_per_s']:.0f}, {y['gflops']:.0f} "
                  f"| {x['steps_per_s'] / y['steps_per_s']:.2f}x |")
    t, r = load(f"tessera-infer-{p}.json"), load(f"pytorch-infer-{p}.json")
    if t and r:
        tp = t["presets"][0]
        key = lambda x: (x["task"], x["batch"], x.get("kv_cache"))
        rr = {key(x): x for x in r["results"]}
        for x in tp["results"]:
            y = rr.get(key(x))
            what = x["task"] + ("" if x.get("kv_cache") is None else (" (KV cache)" if x["kv_cache"] else " (no cache)"))
            ys = f"{y['p50_ms']:.1f} / {y['p95_ms']:.1f}" if y else "-"
            ratio = f"{y['p50_ms'] / x['p50_ms']:.2f}x" if y else "-"
            print(f"| {p} {tp['image_size']}px | {what}, batch {x['batch']}: p50 / p95 ms | {x['p50_ms']:.1f} / {x['p95_ms']:.1f} | {ys} | {ratio} |")
t = load("tessera-infer-tiny128.json")
if t:
    for x in t["presets"][0]["results"]:
        if x["task"] == "detect":
            print(f"| tiny 128px | detect (KV cache, {x['tokens']} tokens), batch {x['batch']}: p50 / p95 ms | {x['p50_ms']:.1f} / {x['p95_ms']:.1f} | | |")
for p in ("tiny", "small"):
    t = load(f"tessera-train-{p}.json")
    if t:
        print(f"\nPeak memory (VmHWM) {p} training: {t['presets'][0]['peak_rss_mb']:.0f} MB")
PYEOF
echo "JSON: $OUT"
