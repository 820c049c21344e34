#!/usr/bin/env bash
# Screenshots of every view, taken from the real Tessera window under a virtual X display.
#
#   scripts/screenshots.sh            # writes screenshots/<view>.png
#
# Needs: xvfb, xdotool, imagemagick, and a Vulkan driver for wgpu (lavapipe from mesa-vulkan-drivers works):
#   apt-get install -y xvfb xdotool imagemagick mesa-vulkan-drivers
# The app runs on its first-run demo project in a throwaway config/data folder (never your own settings).
# If the engine can train (`tessera train`), a short run first gives the Predict/Evaluate/Look-inside views a
# model; TESSERA_CHECKPOINT=<dir> uses an existing checkpoint instead.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release
BIN="$PWD/target/release/tessera"
OUT="$PWD/screenshots"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
export TESSERA_CONFIG_DIR="$WORK/config" TESSERA_DATA_DIR="$WORK/data"
export TESSERA_FRAME_LOG=1
SIZE="${SIZE:-1440x900}"
DISPLAY_NUM="${DISPLAY_NUM:-:97}"

Xvfb "$DISPLAY_NUM" -screen 0 "${SIZE}x24" -nolisten tcp >/dev/null 2>&1 &
XVFB_PID=$!
cleanup() {
    kill "$XVFB_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
export DISPLAY="$DISPLAY_NUM"
sleep 1

# The demo project (what a first run creates), so the views have data.
DEMO="$TESSERA_DATA_DIR/demo-project"
"$BIN" demo-data --out "$DEMO" >/dev/null 2>&1 || "$BIN" demo-data "$DEMO" >/dev/null 2>&1 || true

# A model for the Predict / Evaluate / Look-inside views.
CKPT="${TESSERA_CHECKPOINT:-}"
if [[ -z "$CKPT" ]]; then
    # The checkpoint that ships with the app, if this checkout has one.
    CKPT="$(dirname "$(ls assets/*/checkpoint.json 2>/dev/null | head -1)" 2>/dev/null || true)"
    [[ "$CKPT" == "." ]] && CKPT=""
fi
if [[ -z "$CKPT" && -f "$DEMO/tessera.json" ]]; then
    # shellcheck disable=SC2086
    if timeout 600 "$BIN" train "$DEMO" --out "$WORK/model" ${TRAIN_ARGS:---minutes 3} >"$WORK/train.log" 2>&1; then
        CKPT="$WORK/model"
    else
        echo "note: no model for the screenshots ($(tail -1 "$WORK/train.log"))"
    fi
fi
mkdir -p "$TESSERA_CONFIG_DIR"
if [[ -n "$CKPT" ]]; then
    printf '{"last_checkpoint": "%s"}\n' "$CKPT" >"$TESSERA_CONFIG_DIR/settings.json"
fi

# shoot <file name> <view> <seconds to wait> [VAR=value ...], up to 3 tries: now and then the app's connection to
# Xvfb is refused ("Failed to open connection to X server") although the server runs and the next start succeeds.
shoot() {
    for try in 1 2 3; do
        shoot_once "$@" && return 0
        echo "(try $try of 3 failed)"
        sleep 2
    done
    return 1
}

shoot_once() {
    local name="$1" view="$2" wait="$3"
    shift 3
    env TESSERA_VIEW="$view" "$@" "$BIN" >"$WORK/$name.log" 2>&1 &
    local pid=$!
    local wid=""
    for _ in $(seq 1 60); do
        wid="$(xdotool search --name '^Tessera$' 2>/dev/null | head -1 || true)"
        [[ -n "$wid" ]] && break
        sleep 0.5
    done
    if [[ -z "$wid" ]]; then
        echo "error: the window for $view did not appear"; cat "$WORK/$name.log"; kill "$pid" 2>/dev/null || true; return 1
    fi
    xdotool windowmove "$wid" 0 0 2>/dev/null || true
    sleep "$wait"
    # Move the pointer out of the way so no hover effects show.
    xdotool mousemove 1430 890 2>/dev/null || true
    sleep 0.5
    import -window "$wid" "$OUT/$name.png"
    grep -h "frame-time" "$WORK/$name.log" | tail -1 || true
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "screenshots/$name.png"
}

IMAGES="$DEMO/images"
shoot project project 4
shoot label label 4
shoot predict predict 8 TESSERA_PREDICT="$IMAGES"
shoot evaluate evaluate 20 TESSERA_EVALUATE=1
shoot inside inside 10
shoot help label 3 TESSERA_HELP=1
shoot label-light label 4 TESSERA_THEME=light
# Last: a finished run becomes the app's current model (and would replace the demo detector in the shots above).
# 40 s: the run (~55 s on 2 cores) is still going, so the frame times are all measured while training.
shoot train train 40 TESSERA_TRAIN=1
