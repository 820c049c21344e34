#!/usr/bin/env bash
# The CUDA build on a GPU machine: training/inference benchmarks and short detection runs (README, CUDA).
#
#   cargo build --release --features cuda && benchmarks/gpu.sh          # on the GPU machine
#   BIN=path/to/tessera DATA=../shared/data OUT=gpu-results benchmarks/gpu.sh
#
# Writes JSON under $OUT (default: a new temp folder) and prints a summary. With DATA (default ../shared/data, if
# there) it also trains on BCCD and raccoon (3.5 and 2 minutes) and evaluates on their test splits.
# The CUDA libraries (libcublas.so.13 ...) are searched for in the usual places and put on LD_LIBRARY_PATH.
set -uo pipefail
cd "$(dirname "$0")/.."
B=${BIN:-target/release/tessera}
DATA=${DATA:-../shared/data}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
LIBDIRS=$(find /usr /opt /lib /usr/local -xdev \( -name 'libcublas.so.13*' -o -name 'libcurand.so.10*' \
    -o -name 'libcudart.so.13*' \) 2>/dev/null | xargs -r -n1 dirname | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH=${LIBDIRS}${LD_LIBRARY_PATH:-}
ldd "$B" | grep -E 'not found' && { echo "missing libraries (above)" >&2; exit 1; }
"$B" --version || exit 1
# Fail fast when the GPU path does not work at all.
"$B" bench train --gpu --preset tiny --objectives classify --budget-s 1 --skip-peak 2>&1 | tail -2 || exit 2

"$B" bench train --gpu --budget-s 4 --json > "$OUT/bench-train.json" 2> "$OUT/bench-train.err" || echo "bench train failed"
"$B" bench infer --gpu --budget-s 2 --skip-no-cache --json > "$OUT/bench-infer.json" 2> "$OUT/bench-infer.err" || echo "bench infer failed"

# name, data folder, extra train flags
detect_run() {
    local name=$1 data=$2; shift 2
    "$B" train "$data" --task detect --gpu --seed 0 --out "$OUT/$name.ckpt" --json "$@" > "$OUT/$name-train.json" \
        2> "$OUT/$name-train.err" || { echo "$name: training failed (see $OUT/$name-train.err)"; return; }
    "$B" eval "$OUT/$name.ckpt" "$data" --split test --json > "$OUT/$name-eval.json" || echo "$name: eval failed"
}
"$B" demo-data --out "$OUT/demo" --count 1000 > /dev/null
detect_run demo "$OUT/demo" --preset small --minutes 3
if [ -d "$DATA/det-bccd-bloodcells" ]; then
    detect_run bccd "$DATA/det-bccd-bloodcells" --preset small --image-size 128 --minutes 3.5
    detect_run raccoon "$DATA/det-raccoon" --preset small --image-size 128 --minutes 2
fi

python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
def load(f):
    try:
        return json.load(open(os.path.join(out, f)))
    except Exception:
        return None
print("GPU:", open(os.path.join(out, "gpu.txt")).read().strip())
for f in ["bench-train.json", "bench-infer.json"]:
    v = load(f)
    for p in (v or {}).get("presets", []):
        for r in p["results"]:
            if "steps_per_s" in r:
                print(f"train {p['preset']:<6} {r['objective']:<9} {r['steps_per_s']:8.1f} steps/s {r['images_per_s']:8.0f} img/s")
            else:
                kv = " kv" if r.get("kv_cache") else ""
                print(f"infer {p['preset']:<6} {r['task']:<9}{kv} batch {r['batch']}: p50 {r['p50_ms']:.2f} ms")
for name in ["demo", "bccd", "raccoon"]:
    t, e = load(f"{name}-train.json"), load(f"{name}-eval.json")
    if t and e:
        print(f"{name}: {t['steps']} steps in {t['elapsed_s']:.0f} s, test mAP@0.5 {e['map50']:.3f}, mAP@0.5:0.95 {e['map50_95']:.3f}")
PY
echo "results: $OUT"
