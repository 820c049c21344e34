#!/usr/bin/env bash
# Learning quality on the real datasets in ../shared/data (issue 7), measured with the `tessera` CLI only.
# Writes results/quality-<mode>.json (every run: its commands, preset, budget, seed, wall time, test metric; the
# per-experiment mean and spread over seeds; the machine) and prints (and saves as .md) a Markdown table.
#
#   cargo build --release && benchmarks/quality.sh quick                 # runs of 0.2-1 minute: ~5 min of training
#                                                                         # + ~4 min of loading/evaluation on 2 cores
#   benchmarks/quality.sh full --seeds 3                                  # the issue's budgets, seeds 1, 2, 3
#                                                                         # (~5.8 h of training per seed; the script
#                                                                         # prints its plan's total before it starts)
#   benchmarks/quality.sh full --only cifar10,bccd                        # some experiments (comma list)
#
# Honest evaluation: the trainer selects and early-stops on the val split only; the test split is read once per
# model, by `tessera eval --split test`, for the reported number.
#
# Environment (for development; runs with an override are flagged as such in the JSON and the table):
#   DATA=../shared/data  BIN=target/release/tessera  RESULTS_DIR=results
#   QUALITY_MINUTES_SCALE=0.02   multiply every budget (e.g. to check the script end to end in a few minutes)
#   QUALITY_STEPS=5              train for this many steps instead of minutes
#   QUALITY_PRETRAIN_STEPS=5     pretrain for this many steps instead of minutes (default: QUALITY_STEPS)
#   QUALITY_FINETUNE_STEPS=5     fine-tune a pretrained arm for this many steps (default: QUALITY_STEPS)
#   QUALITY_PRETRAIN_SHARE=0.8   part of a pretrained arm's budget spent pretraining (the rest fine-tunes;
#                                CIFAR-10 at 100 labels/class: a 5-minute fine-tune scores what a 15-minute one does)
#   QUALITY_BCCD_PRETRAIN_SHARE=0.3333  the same for the BCCD detection comparison
#   QUALITY_LABELS="10 100 1000" labels per class for the CIFAR-10 label-efficiency curve
#   QUALITY_KEEP=1               keep the checkpoints (printed path) instead of deleting them
set -euo pipefail
cd "$(dirname "$0")/.."

# ---------------------------------------------------------------------------------------------------------------
# Budgets: training minutes per run (a pretrained arm splits its minutes between pretraining and fine-tuning, so
# both arms of a comparison get the same total). Edit here; nothing else in the script hard-codes a budget.
#
# name            dataset              task      preset  quick  preset  full   target (issue 7)
BUDGETS="
digits            cls-sklearn-digits   classify  tiny    0.3    tiny    3      accuracy>=0.98
fashion           cls-fashion-mnist    classify  tiny    0.7    tiny    15     accuracy>=0.92
fashion-best      cls-fashion-mnist    classify  tiny    0.7    tiny    60     accuracy_tta>=0.92
cifar10           cls-cifar10-subset   classify  tiny    0.4    tiny    37     accuracy@1000>=0.70,gain@100>=10
cifar10-best      cls-cifar10-subset   classify  tiny    0.6    tiny    60     accuracy_tta>=0.70
bccd              det-bccd-bloodcells  detect    tiny    0.4    tiny    30     map50>=0.80
raccoon           det-raccoon          detect    tiny    0.5    tiny    30     map50>=0.70
cards             det-playing-cards    detect    tiny    0.5    tiny    30     map50>=0.90
"
# cifar10: the label-efficiency curve. For N in QUALITY_LABELS, a scratch arm and a pretrained arm (pretrain on the
#   train images, labels ignored, then fine-tune on N labels per class) of this many minutes each; the pretraining run
#   is shared by the N but charged in full to each pretrained arm. The train split holds ~900 images per class (the
#   importer carves val out of train), so N=1000 is the all-labels run. Both arms train with the cifar10-best
#   recipe (recipe_of), the pretraining with its augmentation (pretrain_recipe_of). Below all labels the pretrained
#   arm keeps the generative loss on the unlabelled images (tessera's default when fine-tuning with them); each of
#   its steps costs about two plain ones (README: QUALITY_FINETUNE_STEPS=750 for a step-counted run).
# bccd: a scratch arm and a pretrain-on-BCCD-images-then-fine-tune arm of this many minutes each, at 112 px; the
#   pretrained arm spends a third of its minutes pretraining (detection needs more fine-tuning steps than
#   classification) and pretrains without the convolutional stem, so both arms train the same detection model.
# cifar10-best: the best CIFAR-10 recipe, all labels: pretrain on the train images for half the minutes (with
#   pretrain_recipe_of's augmentation), then fine-tune with recipe_of's arguments for the other half.
# fashion-best: the best Fashion-MNIST recipe (its arguments in recipe_of below; random erasing since session 15),
#   60 minutes, also scored with --flip-tta.
# Train arguments an experiment adds to the defaults (none where not listed).
recipe_of() {
    case "$1" in
        fashion-best) echo "--batch-size 64 --lr 2e-3 --patch-size 7 --augment hflip,erase=0.5 --class-aux 1 --local-mixing-full true --stem-channels 16" ;;
        cifar10|cifar10-best) echo "--batch-size 64 --lr 2e-3 --augment hflip,shift=0.1,erase=0.5 --class-aux 1" ;;
        bccd) echo "--image-size 112" ;;
    esac
}
# Pretraining arguments an experiment adds to the defaults.
pretrain_recipe_of() {
    case "$1" in
        cifar10|cifar10-best) echo "--augment hflip,shift=0.1" ;;
        bccd) echo "--image-size 112 --stem-channels 0" ;;
    esac
}
# ---------------------------------------------------------------------------------------------------------------

usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; }
MODE=quick ONLY="" SEEDS=1
while [ $# -gt 0 ]; do
    case "$1" in
        quick|full) MODE=$1 ;;
        --only) ONLY=${2:?--only needs a name}; shift ;;
        --only=*) ONLY=${1#--only=} ;;
        --seeds) SEEDS=${2:?--seeds needs a number}; shift ;;
        --seeds=*) SEEDS=${1#--seeds=} ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
[[ $SEEDS =~ ^[1-9][0-9]*$ ]] || { echo "--seeds must be a positive number (got '$SEEDS')" >&2; exit 2; }
NAMES=$(echo "$BUDGETS" | awk 'NF && $1 !~ /^#/ {print $1}')
for n in ${ONLY//,/ }; do
    echo "$NAMES" | grep -qx "$n" || { echo "--only: unknown experiment '$n' (one of: $(echo $NAMES))" >&2; exit 2; }
done

DATA=${DATA:-../shared/data}
BIN=${BIN:-target/release/tessera}
RESULTS_DIR=${RESULTS_DIR:-results}
SCALE=${QUALITY_MINUTES_SCALE:-1}
STEPS=${QUALITY_STEPS:-}
PRETRAIN_STEPS=${QUALITY_PRETRAIN_STEPS:-$STEPS}
FINETUNE_STEPS=${QUALITY_FINETUNE_STEPS:-$STEPS}
SHARE=${QUALITY_PRETRAIN_SHARE:-0.8}
LABELS=${QUALITY_LABELS:-10 100 1000}
[ -x "$BIN" ] || { echo "$BIN not found: run cargo build --release first" >&2; exit 2; }
[ -d "$DATA" ] || { echo "$DATA not found (set DATA=/path/to/shared/data)" >&2; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tessera-quality.XXXXXX")
if [ "${QUALITY_KEEP:-}" = 1 ]; then echo "checkpoints kept in $WORK"; else trap 'rm -rf "$WORK"' EXIT; fi
# Every run uses one snapshot of the binary: a `cargo build` during a long benchmark must not swap it mid-way.
cp "$BIN" "$WORK/tessera-bin"
VERSION=$("$BIN" --version)
BIN_SHOWN=$BIN BIN=$WORK/tessera-bin
RUNS=$WORK/runs.jsonl
: > "$RUNS"
FAILED=0

# field NAME COLUMN: a column of an experiment's budget row (1 name, 2 dataset, 3 task, 4/5 quick, 6/7 full, 8 target).
field() { echo "$BUDGETS" | awk -v n="$1" -v c="$2" '$1 == n {print $c}'; }
preset_of() { if [ "$MODE" = quick ]; then field "$1" 4; else field "$1" 6; fi; }
minutes_of() { if [ "$MODE" = quick ]; then field "$1" 5; else field "$1" 7; fi; }
calc() { python3 -c "print(round($1, 4))"; }
# Part of a pretrained arm's minutes spent pretraining.
share_of() { if [ "$1" = bccd ]; then echo "${QUALITY_BCCD_PRETRAIN_SHARE:-0.3333}"; else echo "$SHARE"; fi; }
selected() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
# How long to run: --minutes M, or --steps when QUALITY_STEPS overrides.
stop_args() { if [ -n "$STEPS" ]; then echo "--steps $STEPS"; else echo "--minutes $1"; fi; }
now() { date +%s.%N; }
short() { local s="$*"; s=${s#$BIN }; s=${s//$WORK\//}; s=${s//$DATA\//}; echo "tessera $s"; }
# record KEY VALUE ...: one JSON line per run; values that parse as JSON keep their type.
record() {
    python3 -c '
import json, sys
def val(v):
    try: return json.loads(v)
    except ValueError: return v
a = sys.argv[1:]
print(json.dumps({k: val(v) for k, v in zip(a[::2], a[1::2])}))' "$@" >> "$RUNS"
}
jget() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps(d.get(sys.argv[2])))" "$@"; }

# tessera CMD...: runs one CLI command with --json into $WORK/last.json; times it; logs it; returns its status.
LAST_WALL=0
tessera() {
    local t0; t0=$(now)
    echo "  \$ $(short "$BIN" "$@")" >&2
    local rc=0
    "$BIN" "$@" --json > "$WORK/last.json" 2> "$WORK/last.err" || rc=$?
    LAST_WALL=$(calc "$(now) - $t0")
    [ $rc = 0 ] && return 0
    [ $rc -gt 128 ] && echo "killed by signal $((rc - 128))" >> "$WORK/last.err"
    echo "exit status $rc" >> "$WORK/last.err"
    echo "  FAILED: $(tail -n 4 "$WORK/last.err")" >&2
    return 1
}
# The last lines of the failed command's stderr, on one line.
why() { tail -n 4 "$WORK/last.err" | tr '\n' ' '; }

# train_and_test EXP ARM DATASET TASK PRESET SEED MINUTES PRETRAIN_MINUTES PRETRAIN_CKPT PRETRAIN_CMD LABELS [train args...]
# Trains (fine-tunes from PRETRAIN_CKPT when given), evaluates on the test split, records the run.
train_and_test() {
    local exp=$1 arm=$2 ds=$3 task=$4 preset=$5 seed=$6 minutes=$7 pre_min=$8 pre_ckpt=$9 pre_cmd=${10} labels=${11}
    shift 11
    local ckpt="$WORK/$exp-$arm-n$labels-s$seed" fine_min
    fine_min=$(calc "$minutes - $pre_min")
    local stop
    if [ -n "$pre_ckpt" ]; then stop=$(STEPS=$FINETUNE_STEPS stop_args "$fine_min"); else stop=$(stop_args "$fine_min"); fi
    local args=("$DATA/$ds" --task "$task" --preset "$preset" --seed "$seed" $stop --out "$ckpt")
    [ "$labels" != all ] && args+=(--labels-per-class "$labels")
    [ -n "$pre_ckpt" ] && args+=(--init "$pre_ckpt")
    args+=("$@")
    local train_cmd eval_cmd train_json eval_json
    train_cmd=$(short "$BIN" train "${args[@]}")
    eval_cmd=$(short "$BIN" eval "$ckpt" "$DATA/$ds" --split test)
    if ! tessera train "${args[@]}"; then
        record experiment "$exp" arm "$arm" dataset "$ds" seed "$seed" error "train failed: $(why)" \
            train_command "$train_cmd"
        FAILED=1; return 0
    fi
    train_json=$(cat "$WORK/last.json"); local train_wall=$LAST_WALL
    if ! tessera eval "$ckpt" "$DATA/$ds" --split test; then
        record experiment "$exp" arm "$arm" dataset "$ds" seed "$seed" error "eval failed: $(why)" \
            train_command "$train_cmd" eval_command "$eval_cmd"
        FAILED=1; return 0
    fi
    eval_json=$(python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps({k: d.get(k) for k in ("accuracy", "map50", "map50_95", "images", "precision", "recall")}))' < "$WORK/last.json")
    local eval_wall=$LAST_WALL
    # Detection: the same weights again with test-time augmentation (every flip/90° turn, boxes fused); a
    # classification recipe that trains with flips: mirrored and plain probabilities averaged.
    if [ "$task" = detect ] || [[ " $* " == *hflip* ]]; then
        eval_cmd="$eval_cmd; $(short "$BIN" eval "$ckpt" "$DATA/$ds" --split test --flip-tta)"
        if tessera eval "$ckpt" "$DATA/$ds" --split test --flip-tta; then
            eval_json=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); t=json.load(open(sys.argv[2])); d.update({"map50_tta": t.get("map50"), "map50_95_tta": t.get("map50_95")} if t.get("accuracy") is None else {"accuracy_tta": t.get("accuracy")}); print(json.dumps(d))' "$eval_json" "$WORK/last.json")
            eval_wall=$(calc "$eval_wall + $LAST_WALL")
        else
            record experiment "$exp" arm "$arm" dataset "$ds" seed "$seed" error "eval --flip-tta failed: $(why)" eval_command "$eval_cmd"
            FAILED=1
        fi
    fi
    record experiment "$exp" arm "$arm" dataset "$ds" task "$task" preset "$preset" seed "$seed" labels_per_class "\"$labels\"" \
        minutes "$minutes" pretrain_minutes "$pre_min" finetune_minutes "$fine_min" steps_override "${STEPS:-null}" \
        pretrain_steps_override "${PRETRAIN_STEPS:-null}" finetune_steps_override "${FINETUNE_STEPS:-null}" \
        pretrain_command "$pre_cmd" train_command "$train_cmd" eval_command "$eval_cmd" \
        train_wall_s "$train_wall" eval_wall_s "$eval_wall" train "$train_json" test "$eval_json"
    echo "  -> $(python3 -c 'import json,sys; print(", ".join(f"{k} {v:.4f}" for k, v in json.loads(sys.argv[1]).items() if k in ("accuracy", "accuracy_tta", "map50", "map50_95", "map50_tta") and v is not None))' "$eval_json")" >&2
}

# pretrain EXP DATASET PRESET SEED MINUTES [pretrain args...]: sets PRE_CKPT and PRE_CMD ("" on failure).
pretrain() {
    local exp=$1 ds=$2 preset=$3 seed=$4 minutes=$5
    shift 5
    local ckpt="$WORK/$exp-pretrain-s$seed"
    local args=("$DATA/$ds" --preset "$preset" --seed "$seed" $(STEPS=$PRETRAIN_STEPS stop_args "$minutes") --out "$ckpt" "$@")
    PRE_CMD=$(short "$BIN" pretrain "${args[@]}") PRE_CKPT=""
    if tessera pretrain "${args[@]}"; then
        PRE_CKPT=$ckpt
        record experiment "$exp" arm pretrain-only dataset "$ds" preset "$preset" seed "$seed" minutes "$minutes" \
            pretrain_command "$PRE_CMD" train_wall_s "$LAST_WALL" train "$(cat "$WORK/last.json")"
    else
        record experiment "$exp" arm pretrained dataset "$ds" seed "$seed" error "pretrain failed: $(why)" \
            pretrain_command "$PRE_CMD"
        FAILED=1
    fi
}

# One experiment, one seed.
run_experiment() {
    local exp=$1 seed=$2 ds task preset minutes pre_min
    ds=$(field "$exp" 2) task=$(field "$exp" 3) preset=$(preset_of "$exp") minutes=$(calc "$(minutes_of "$exp") * $SCALE")
    echo "== $exp (seed $seed, $preset, $minutes min per arm${STEPS:+, steps override $STEPS})" >&2
    case "$exp" in
        cifar10|bccd)
            pre_min=$(calc "$minutes * $(share_of "$exp")")
            local labels_list=$LABELS
            [ "$exp" = bccd ] && labels_list=all
            for n in $labels_list; do
                train_and_test "$exp" scratch "$ds" "$task" "$preset" "$seed" "$minutes" 0 "" "" "$n" $(recipe_of "$exp")
            done
            pretrain "$exp" "$ds" "$preset" "$seed" "$pre_min" $(pretrain_recipe_of "$exp")
            if [ -n "$PRE_CKPT" ]; then
                for n in $labels_list; do
                    train_and_test "$exp" pretrained "$ds" "$task" "$preset" "$seed" "$minutes" "$pre_min" "$PRE_CKPT" "$PRE_CMD" "$n" $(recipe_of "$exp")
                done
            fi
            ;;
        cifar10-best)
            pre_min=$(calc "$minutes * 0.5")
            pretrain "$exp" "$ds" "$preset" "$seed" "$pre_min" $(pretrain_recipe_of "$exp")
            if [ -n "$PRE_CKPT" ]; then
                train_and_test "$exp" pretrained "$ds" "$task" "$preset" "$seed" "$minutes" "$pre_min" "$PRE_CKPT" "$PRE_CMD" all $(recipe_of "$exp")
            fi
            ;;
        *) train_and_test "$exp" scratch "$ds" "$task" "$preset" "$seed" "$minutes" 0 "" "" all $(recipe_of "$exp") ;;
    esac
}

# The plan, with its training time, before anything starts.
PLAN=""
for exp in $NAMES; do selected "$exp" && PLAN="$PLAN $exp"; done
total=0
for exp in $PLAN; do
    m=$(minutes_of "$exp")
    case "$exp" in
        cifar10) m=$(calc "$m * $(echo $LABELS | wc -w) * (2 - $SHARE) + $m * $SHARE") ;;
        bccd) m=$(calc "$m * 2") ;;  # a scratch arm and a pretrained arm
    esac
    total=$(calc "$total + $m")
done
echo "quality $MODE: experiments$PLAN; seeds 1..$SEEDS; about $(calc "$total * $SEEDS * $SCALE") minutes of training${STEPS:+ (steps override: $STEPS steps per run)} plus evaluation" >&2

START=$(now)
for seed in $(seq 1 "$SEEDS"); do
    for exp in $PLAN; do run_experiment "$exp" "$seed"; done
done

# ---------------------------------------------------------------------------------------------------------------
# Summary: mean and spread over seeds per experiment / arm / labels, the label-efficiency gains, the table.
mkdir -p "$RESULTS_DIR"
OVERRIDE=""
[ "$SCALE" != 1 ] && OVERRIDE="QUALITY_MINUTES_SCALE=$SCALE"
[ -n "$STEPS" ] && OVERRIDE="${OVERRIDE:+$OVERRIDE }QUALITY_STEPS=$STEPS"
[ -n "$PRETRAIN_STEPS" ] && [ "$PRETRAIN_STEPS" != "$STEPS" ] && OVERRIDE="${OVERRIDE:+$OVERRIDE }QUALITY_PRETRAIN_STEPS=$PRETRAIN_STEPS"
export MODE SEEDS SHARE SCALE OVERRIDE BUDGETS
export CPU_MODEL=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
export VERSION CORES=$(nproc) COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
export DIRTY=$(git status --porcelain --untracked-files=no 2>/dev/null | head -c 1 | wc -c) WALL=$(calc "$(now) - $START")
python3 - "$RUNS" "$RESULTS_DIR/quality-$MODE.json" "$RESULTS_DIR/quality-$MODE.md" <<'PYEOF'
import json, os, re, statistics, sys
runs_path, json_path, md_path = sys.argv[1:4]
runs = [json.loads(l) for l in open(runs_path) if l.strip()]
env = os.environ
# Targets from the budget table: "metric[@labels]>=floor", comma separated; "gain" is pretrained minus scratch in points.
targets = {}
for line in env["BUDGETS"].splitlines():
    f = line.split()
    if len(f) >= 8 and not f[0].startswith("#"):
        for t in f[7].split(","):
            what, floor = t.split(">=")
            metric, _, labels = what.partition("@")
            targets.setdefault(f[0], []).append((metric, labels or "all", float(floor)))

def target_for(exp, metric, labels, arm="scratch"):
    """The target shown on a row ("" if none): on scratch rows and pretraining-gain rows."""
    for m, l, floor in targets.get(exp, []):
        # An experiment without a scratch arm (cifar10-best) shows its target on its pretrained rows.
        only_arm = not any(m2 == "gain" for m2, _, _ in targets[exp])
        if m in (metric, metric.removesuffix("_tta")) and l == labels and (metric == "gain" or arm == "scratch" or only_arm):
            return f">= {floor:g}"
    return ""

def spread(values):
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0,
            "min": min(v), "max": max(v), "n": len(v), "values": v}

groups = {}
for r in runs:
    if r.get("arm") == "pretrain-only" or "error" in r:
        continue
    key = (r["experiment"], r["arm"], str(r.get("labels_per_class", "all")))
    groups.setdefault(key, []).append(r)

summary = []
for (exp, arm, labels), rs in groups.items():
    r0 = rs[0]
    # map50_tta: the same weights decoded with --flip-tta (detection test-time augmentation).
    metrics = (["accuracy"] + (["accuracy_tta"] if any("accuracy_tta" in r["test"] for r in rs) else [])) if r0["task"] == "classify" \
        else ["map50", "map50_tta", "map50_95"]
    summary.append({
        "experiment": exp, "arm": arm, "dataset": r0["dataset"], "task": r0["task"], "preset": r0["preset"],
        "labels_per_class": labels, "minutes": r0["minutes"], "pretrain_minutes": r0["pretrain_minutes"],
        "steps_override": r0.get("steps_override"), "pretrain_steps_override": r0.get("pretrain_steps_override"),
        "finetune_steps_override": r0.get("finetune_steps_override"),
        "seeds": [r["seed"] for r in rs], "command": r0["train_command"], "pretrain_command": r0.get("pretrain_command", ""),
        "metrics": {m: spread([r["test"].get(m) for r in rs]) for m in metrics},
        "train_wall_s": spread([r["train_wall_s"] for r in rs]),
    })

# Pretrained minus scratch, in points, per seed then summarised (same experiment, same labels, same seed).
gains = []
by_key = {(r["experiment"], r["arm"], str(r.get("labels_per_class")), r["seed"]): r for r in runs if "test" in r}
for (exp, arm, labels), rs in groups.items():
    if arm != "pretrained":
        continue
    metric = "accuracy" if rs[0]["task"] == "classify" else "map50"
    diffs = []
    for r in rs:
        s = by_key.get((exp, "scratch", labels, r["seed"]))
        if s and s["test"].get(metric) is not None and r["test"].get(metric) is not None:
            diffs.append(100.0 * (r["test"][metric] - s["test"][metric]))
    if diffs:
        gains.append({"experiment": exp, "labels_per_class": labels, "metric": metric, "points": spread(diffs)})

result = {
    "mode": env["MODE"], "override": env["OVERRIDE"] or None, "seeds": int(env["SEEDS"]),
    "pretrain_share": float(env["SHARE"]), "minutes_scale": float(env["SCALE"]),
    "machine": {"cpu": env["CPU_MODEL"], "cores": int(env["CORES"])},
    "tessera": env["VERSION"], "commit": env["COMMIT"] + ("-dirty" if env["DIRTY"] != "0" else ""),
    "wall_s": float(env["WALL"]), "summary": summary, "pretraining_gain": gains,
    "failed": [r for r in runs if "error" in r], "runs": runs,
}
tmp = json_path + ".tmp"
with open(tmp, "w") as f:
    json.dump(result, f, indent=2)
os.replace(tmp, json_path)

def fmt(s, scale=1.0, digits=3):
    if s is None:
        return "—"
    if s["n"] == 1:
        return f"{s['mean'] * scale:.{digits}f}"
    return f"{s['mean'] * scale:.{digits}f} ± {s['std'] * scale:.{digits}f} [{s['min'] * scale:.{digits}f}, {s['max'] * scale:.{digits}f}]"

def verdict(target, s):
    if not target or s is None:
        return target
    return f"{target} {'met' if s['mean'] >= float(target[3:]) else 'not met'}"

def with_seed_placeholder(cmd, seeds):
    """One command for all seeds: `--seed 1` becomes `--seed SEED` (and the checkpoint names with it)."""
    if len(seeds) < 2:
        return cmd
    return re.sub(rf"(--seed |-s){seeds[0]}\b", r"\1SEED", cmd)

lines = []
title = f"Tessera learning quality ({result['mode']} mode"
title += f", OVERRIDE {result['override']}: not comparable" if result["override"] else ""
lines += [f"## {title})", "",
          f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores (CPU). {result['tessera']}, commit "
          f"{result['commit']}. Seeds: {', '.join(str(s) for s in range(1, result['seeds'] + 1))}"
          f" (mean ± std [min, max] when more than one). Test split, read once per model.", "",
          "| experiment | arm | labels/class | command | preset | minutes (pretrain+fine-tune) | seeds | metric | test value | target |",
          "|---|---|---|---|---|---|---|---|---|---|"]
for s in summary:
    for m, v in s["metrics"].items():
        minutes = f"{s['pretrain_minutes']:g}+{s['minutes'] - s['pretrain_minutes']:g}" if s["arm"] == "pretrained" else f"{s['minutes']:g}"
        if s["steps_override"] and s["arm"] == "pretrained":
            minutes = f"{s['pretrain_steps_override'] or s['steps_override']}+{s.get('finetune_steps_override') or s['steps_override']} steps"
        elif s["steps_override"]:
            minutes = f"{s['steps_override']} steps"
        cmd = s["command"] if not s["pretrain_command"] else f"{s['pretrain_command']}; {s['command']}"
        cmd = with_seed_placeholder(cmd, s["seeds"])
        t = target_for(s["experiment"], m, s["labels_per_class"], s["arm"])
        lines.append(f"| {s['experiment']} | {s['arm']} | {s['labels_per_class']} | `{cmd}` | {s['preset']} | {minutes} | "
                     f"{','.join(map(str, s['seeds']))} | {m} | {fmt(v)} | {verdict(t, v)} |")
if gains:
    lines += ["", "Pretraining gain (pretrained minus scratch, same total minutes, same seed), in points:", "",
              "| experiment | labels/class | metric | gain (points) | target |", "|---|---|---|---|---|"]
    for g in gains:
        t = target_for(g["experiment"], "gain", g["labels_per_class"])
        lines.append(f"| {g['experiment']} | {g['labels_per_class']} | {g['metric']} | {fmt(g['points'], digits=1)} | {verdict(t, g['points'])} |")
if result["failed"]:
    lines += ["", "Failed runs:"] + [f"- {r['experiment']} {r.get('arm')} seed {r['seed']}: {r['error']}" for r in result["failed"]]
lines += ["", f"Total wall time {result['wall_s'] / 60:.1f} minutes. Results: {json_path}"]
md = "\n".join(lines) + "\n"
with open(md_path, "w") as f:
    f.write(md)
print(md)
PYEOF
exit $FAILED
