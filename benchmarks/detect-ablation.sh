#!/usr/bin/env bash
# The dense-loss / learning-rate ablation on the shapes demo (README, Quality): each arm trains the tiny detector for
# MIN minutes from scratch and is evaluated on the test split.
#   benchmarks/detect-ablation.sh                 every arm, one after the other (2 threads each)
#   PARALLEL=8 benchmarks/detect-ablation.sh      8 arms side by side (needs 16 cores; how the README's table was made)
# Env: MIN (default 6), SEED (default 0), OUT (default results/detect-ablation), PARALLEL (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
BIN=$PWD/target/release/tessera
MIN=${MIN:-6}; SEED=${SEED:-0}; PARALLEL=${PARALLEL:-1}
OUT=${OUT:-results/detect-ablation}; mkdir -p "$OUT"
D=$(mktemp -d); trap 'rm -rf "$D"' EXIT
$BIN demo-data --out "$D/shapes" >/dev/null

# name | extra train arguments
ARMS=(
  "plain|--dense-aux 0 --lr 1e-3"
  "aux0.3|--dense-aux 0.3 --lr 1e-3"
  "aux1|--dense-aux 1 --lr 1e-3"
  "aux3|--dense-aux 3 --lr 1e-3"
  "aux1-lr2e-3|--dense-aux 1 --lr 2e-3"
  "aux1-b32|--dense-aux 1 --lr 1e-3 --batch-size 32"
  "aux1-noaug|--dense-aux 1 --lr 1e-3 --augment none"
  "aux1-48px|--dense-aux 1 --lr 1e-3 --image-size 48"
)
arm() {
  local name=$1; shift
  # shellcheck disable=SC2068
  RAYON_NUM_THREADS=2 $BIN train "$D/shapes" --task detect --preset tiny --minutes "$MIN" --seed "$SEED" \
    --out "$D/$name.ckpt" --json $@ > "$OUT/$name.train.json" 2>/dev/null
  RAYON_NUM_THREADS=2 $BIN eval "$D/$name.ckpt" "$D/shapes" --split test --json > "$OUT/$name.test.json"
}
running=0
for a in "${ARMS[@]}"; do
  arm "${a%%|*}" ${a#*|} &
  running=$((running + 1))
  if [ "$running" -ge "$PARALLEL" ]; then wait -n; running=$((running - 1)); fi
done
wait
printf '%-14s %7s %8s %10s\n' arm steps map50 map50_95
for a in "${ARMS[@]}"; do
  n=${a%%|*}
  python3 -c "
import json, sys
t = json.load(open('$OUT/$n.test.json')); r = json.load(open('$OUT/$n.train.json'))
print('%-14s %7d %8.3f %10.3f' % ('$n', r['steps'], t['map50'], t['map50_95']))"
done
