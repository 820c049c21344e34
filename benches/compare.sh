#!/usr/bin/env bash
# Tessera vs the identical model in PyTorch (benches/reference), side by side in one run on the same cores.
#
#   benches/compare.sh                      tiny and small, training (all objectives) + inference
#   PRESETS=tiny WHAT=train benches/compare.sh
#   CORES=0,1 THREADS=2 BUDGET=10 benches/compare.sh
#
# Both sides: same model, weights init scheme, batch (32), sequence, thread count, pinned with taskset to $CORES.
# The equality check runs first: Tessera dumps its initial weights + a batch, PyTorch must reproduce every loss
# (and the loss after 3 AdamW steps) within 1e-4 relative. Prints one ratio per measurement (>1 = Tessera faster).
# Needs: cargo build --release; benches/reference/setup.sh (python3-torch, python3-numpy from Debian).
set -euo pipefail
cd "$(dirname "$0")/.."
PRESETS=${PRESETS:-tiny small}
WHAT=${WHAT:-train infer}
CORES=${CORES:-0,1}
THREADS=${THREADS:-2}
BUDGET=${BUDGET:-10}
PY=${PY:-/usr/bin/python3}
BIN=${BIN:-target/release/tessera}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }

tessera() { RAYON_NUM_THREADS=$THREADS taskset -c "$CORES" "$BIN" bench "$@"; }
# OpenBLAS tuning variables some machines set for other tools must not bias the reference. OMP_WAIT_POLICY=PASSIVE:
# with OpenMP's default busy-waiting, torch is 4-40x slower whenever the cores are shared (measured here); passive
# waiting is the reference at its best. REF_ENV="OMP_WAIT_POLICY=ACTIVE" measures the default.
REF_ENV=${REF_ENV:-OMP_WAIT_POLICY=PASSIVE}
reference() { env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=$THREADS $REF_ENV \
    taskset -c "$CORES" "$PY" benches/reference/bench.py "$@"; }

echo "machine: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), $(nproc) cpus, cores $CORES, $THREADS threads each side"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) (the cores are shared: compare ratios, not absolutes)"

echo "== equality check (same weights, same batch)"
for p in $PRESETS; do
    "$BIN" bench train --preset "$p" --dump "$OUT/check-$p" >/dev/null
    reference check "$OUT/check-$p" | sed "s/^/  $p: /"
done

for p in $PRESETS; do
    for w in $WHAT; do
        extra=()
        [ "$w" = infer ] && [ "$p" = small ] && extra=(--skip-no-cache)
        tessera "$w" --preset "$p" --budget-s "$BUDGET" --skip-peak --json "${extra[@]}" 2>/dev/null > "$OUT/tessera-$w-$p.json"
        reference "$w" --from "$OUT/check-$p" --seconds "$BUDGET" --threads "$THREADS" --json "${extra[@]}" > "$OUT/pytorch-$w-$p.json"
    done
done
tessera train --preset tiny --objectives classify --budget-s 1 --json 2>/dev/null > "$OUT/tessera-peak.json" || true
"$PY" - "$OUT" "$PRESETS" "$WHAT" <<'PYEOF'
import json, os, sys
out, presets, whats = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
def load(name):
    p = os.path.join(out, name)
    return json.load(open(p)) if os.path.exists(p) and os.path.getsize(p) else None
for p in presets:
    for w in whats:
        t, r = load(f"tessera-{w}-{p}.json"), load(f"pytorch-{w}-{p}.json")
        if not t or not r:
            print(f"{w} {p}: missing results"); continue
        tp = t["presets"][0]
        print(f"== {w} {p} ({tp['image_size']} px, patch {tp['patch_size']}); peak memory tessera {tp['peak_rss_mb']:.0f} MB, pytorch {r['peak_rss_mb']:.0f} MB")
        if w == "train":
            rr = {x["objective"]: x for x in r["results"]}
            print(f"  {'objective':<10}{'tessera steps/s':>16}{'pytorch steps/s':>16}{'ratio':>8}   tessera fwd/bwd/clip/adamw ms      pytorch fwd/bwd/clip/adamw ms")
            for x in tp["results"]:
                y = rr[x["objective"]]
                phases = ("forward", "backward", "clip", "optimizer")
                bt = "/".join(f"{x['breakdown_ms'][k]:.0f}" for k in phases)
                by = "/".join(f"{y['breakdown_ms'][k]:.0f}" for k in phases)
                print(f"  {x['objective']:<10}{x['steps_per_s']:>16.3f}{y['steps_per_s']:>16.3f}{x['steps_per_s']/y['steps_per_s']:>7.2f}x   {bt:<34} {by}")
                print(f"  {'':<10}{x['images_per_s']:>12.1f} im/s{y['images_per_s']:>11.1f} im/s   {x['gflops']:.1f} vs {y['gflops']:.1f} GFLOP/s")
        else:
            def key(x): return (x["task"], x["batch"], x.get("kv_cache"))
            rr = {key(x): x for x in r["results"]}
            print(f"  {'case':<28}{'tessera p50 ms':>15}{'pytorch p50 ms':>15}{'ratio':>8}{'tessera p95':>13}{'pytorch p95':>13}")
            for x in tp["results"]:
                y = rr.get(key(x))
                if not y: continue
                name = f"{x['task']} b{x['batch']}" + ("" if x.get("kv_cache") is None else (" kv-cache" if x["kv_cache"] else " no-cache"))
                print(f"  {name:<28}{x['p50_ms']:>15.2f}{y['p50_ms']:>15.2f}{y['p50_ms']/x['p50_ms']:>7.2f}x{x['p95_ms']:>13.2f}{y['p95_ms']:>13.2f}")
pk = load("tessera-peak.json")
if pk and "matmul_peak_gflops" in pk:
    print(f"matmul peak (candle 2048^3 f32, same threads): {pk['matmul_peak_gflops']:.1f} GFLOP/s")
print(f"ratio = tessera speed / pytorch speed (>1: tessera faster). JSON files: {out}")
PYEOF
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
