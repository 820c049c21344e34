#!/usr/bin/env bash
# CI quality floor on real data (runs when ../shared/data exists): short training runs that must stay above a floor.
# These are regression alarms, not the headline numbers (see benchmarks/quality.sh for those).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
BIN=target/release/tessera
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
json() { python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }
floor() { python3 -c "import sys; v,f=float(sys.argv[1]),float(sys.argv[2]); print(('PASS' if v>=f else 'FAIL'), sys.argv[3], v, '(floor', f, ')'); sys.exit(0 if v>=f else 1)" "$@"; }

$BIN train "$DATA/cls-sklearn-digits" --task classify --preset tiny --minutes 1.5 --seed 1 --out "$t/digits.ckpt" >/dev/null
acc=$($BIN eval "$t/digits.ckpt" "$DATA/cls-sklearn-digits" --split test --json | json accuracy)
floor "$acc" 0.93 "digits accuracy (1.5 min, tiny)"

# Detection on the demo data: a fixed step count (deterministic, unlike a time budget), ~2 minutes on 2 cores.
# Measured: 0.513 (session 6, with local mixing; CI on a fresh clone gave the same figure); 0.335 before it.
$BIN demo-data --out "$t/demo" >/dev/null
$BIN train "$t/demo" --task detect --preset tiny --steps 1500 --seed 1 --out "$t/demo.ckpt" >/dev/null
m=$($BIN eval "$t/demo.ckpt" "$t/demo" --split test --json | json map50)
floor "$m" 0.4 "demo detection mAP@0.5 (1500 steps, tiny)"
