#!/usr/bin/env bash
# What anyone lent a GPU machine for a few minutes runs in one go (at most 8 minutes on one
# H100 or H200, no network needed there), from the repository root with a release binary
# built elsewhere:
#
#   CUDARC_CUDA_VERSION=13000 cargo build --release --features cuda     # here
#   scripts/gpu-check.sh [--device cuda[:N]] [--cft PATH]               # there
#
# carrying target/release/cft (or any binary named by --cft or $CFT) and tests/fixtures along
# with the repository. It runs, each step under its own time limit (cut to what is left of
# 470 s, so the whole keeps within 8 minutes), a failing or timed-out step reported without
# stopping the others:
#   1. `cft check parity`: the model parity tests of the four fixture families (logits alone
#      and left-padded, greedy and batched generation, scores) against transformers' saved
#      outputs, with the tests' tolerances, on the device;
#   2. a random model of Qwen2.5-0.5B's shape written by transformers (or by `cft check
#      make-model` where transformers is missing), then `cft bench generate --batch 1,8,64`
#      and the same with transformers on the same device;
#   3. `cft bench train` and `scripts/bench_train_transformers.py` on that model;
#   4. the reduced quickstart (`experiments/checks/reduced.toml`) with `cft run --device`,
#      checked to finish and to report;
#   5. `cft bench annotate` on the reduced quickstart's model (its greedy pass is cached);
#   6. `cft bench train --strategy offload --save-state` on the benchmark model: the host-side
#      optimiser's speed, and the training state streamed to a file and back;
#   7. `cft bench gemm`: the device's f32 matrix-product rate, which the decoding and training
#      rates read against.
# and prints one markdown table (device, date, every check: cft number, transformers number,
# ratio, PASS / FAIL / SKIPPED), also written to $OUT/gpu-check.md ($OUT set) or to
# gpu-check.md where it was started. Python steps are SKIPPED, with the reason, when
# `import torch, transformers` fails ($PYTHON is the interpreter, python3 by default).
# Exit status: 0 when nothing failed, 1 when a check failed, 2 for a bad command line.
#
# `--device cpu` runs a smaller version (the tiny benchmark model, fewer tokens, batch 1,8);
# `tests/gpu_check.rs` runs it so the script cannot rot. Logs of every step stay under
# --work DIR (default: a new temporary directory, printed at the end).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

DEVICE=cuda
CFT_BIN=${CFT:-$ROOT/target/release/cft}
PYTHON=${PYTHON:-python3}
WORK=""
usage() {
    echo "usage: $0 [--device cpu|cuda|cuda:N] [--cft PATH] [--work DIR]" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
        --device) [ $# -ge 2 ] || usage; DEVICE=$2; shift 2 ;;
        --cft) [ $# -ge 2 ] || usage; CFT_BIN=$2; shift 2 ;;
        --work) [ $# -ge 2 ] || usage; WORK=$2; shift 2 ;;
        -h | --help) usage ;;
        *) echo "$0: unknown argument $1" >&2; usage ;;
    esac
done
case "$DEVICE" in
    cpu | cuda | cuda:[0-9]*) ;;
    *) echo "$0: --device $DEVICE: expected cpu, cuda or cuda:N" >&2; exit 2 ;;
esac
if [ ! -x "$CFT_BIN" ] || [ -d "$CFT_BIN" ]; then
    echo "$0: no cft binary at $CFT_BIN (build it with cargo build --release [--features cuda], or give --cft PATH)" >&2
    exit 2
fi
# Paths given relative to where the script was started; then everything runs from the root.
CFT_BIN=$(cd "$(dirname "$CFT_BIN")" && pwd)/$(basename "$CFT_BIN")
[ -n "$WORK" ] || WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
mkdir -p "$WORK" || exit 2
WORK=$(cd "$WORK" && pwd)
OUT_FILE=${OUT:+$OUT/gpu-check.md}
OUT_FILE=${OUT_FILE:-gpu-check.md}
case "$OUT_FILE" in /*) ;; *) OUT_FILE=$PWD/$OUT_FILE ;; esac
cd "$ROOT" || exit 2
# A reused --work starts clean: stale logs would be read as this run's.
rm -rf "$WORK"/*.log "$WORK/table.md" "$WORK/bench-model" "$WORK/reduced-cache"

# Sizes and limits. The GPU run must end within 8 minutes whatever hangs: every step's limit
# is cut to what is left of DEADLINE, and a step with under 10 s left is not started.
if [ "$DEVICE" = cpu ]; then
    SHAPE=tiny BATCHES=1,8 NEW_TOKENS=16
    TRAIN_ARGS=(--batch 4 --seq-len 64 --steps 2)
    DEADLINE=900
    declare -A LIMIT=([parity]=120 [model]=120 [generate]=120 [generate-tf]=120 [train]=120
        [train-tf]=120 [reduced]=420 [annotate]=180 [offload]=120 [gemm]=60)
    GEMM_ARGS=(--square 512,1024 --rows 8 --seconds 0.2)
else
    SHAPE=qwen2.5-0.5b BATCHES=1,8,64 NEW_TOKENS=64
    TRAIN_ARGS=(--batch 8 --seq-len 128 --steps 5)
    DEADLINE=470
    declare -A LIMIT=([parity]=60 [model]=60 [generate]=90 [generate-tf]=45 [train]=75
        [train-tf]=45 [reduced]=120 [annotate]=45 [offload]=60 [gemm]=30)
    GEMM_ARGS=(--square 2048,4096,8192 --rows 1,8,64 --seconds 0.3)
fi
START=$SECONDS

log() { echo "[gpu-check $((SECONDS - START))s] $*" >&2; }

# step NAME CMD...: runs CMD under NAME's limit with its output in $WORK/NAME.log; sets
# STEP_RC (124: timed out, 125: not started for lack of time) and STEP_S (seconds).
step() {
    local name=$1
    shift
    local left=$((DEADLINE - (SECONDS - START) - 10))
    local limit=${LIMIT[$name]}
    [ "$limit" -le "$left" ] || limit=$left
    STEP_S=0
    if [ "$left" -lt 10 ]; then
        log "$name: not started, the ${DEADLINE} s budget is spent"
        STEP_RC=125
        return
    fi
    log "$name: $* (limit ${limit} s)"
    local t0=$SECONDS
    timeout -k 5 "$limit" "$@" >"$WORK/$name.log" 2>&1
    STEP_RC=$?
    STEP_S=$((SECONDS - t0))
    [ "$STEP_RC" = 137 ] && STEP_RC=124
    log "$name: exit $STEP_RC after ${STEP_S} s"
}

# Why a failed step failed, for the notes column.
why() {
    case "$STEP_RC" in
        124) echo "timed out after ${STEP_S} s" ;;
        125) echo "not started: the ${DEADLINE} s budget was spent" ;;
        *) echo "exit $STEP_RC: $(grep -v '^\s*$' "$WORK/$1.log" | tail -1 | tr '|' '/' | cut -c1-160)" ;;
    esac
}

ROWS=()
FAILED=0
# row CHECK CFT TRANSFORMERS RATIO RESULT NOTES
row() {
    ROWS+=("| $1 | $2 | $3 | $4 | $5 | $6 |")
    [ "$5" = FAIL ] && FAILED=$((FAILED + 1))
    return 0
}
# tf_row CHECK NUMBERS NOTES RC WHY: the row of a Python step.
TF_GEN_RC=125 TF_GEN_WHY="" TF_TRAIN_RC=125 TF_TRAIN_WHY=""
tf_row() {
    if [ -n "$PY_SKIP" ]; then
        row "$1" — — — SKIPPED "$PY_SKIP"
    elif [ -z "$MAKER" ]; then
        row "$1" — — — SKIPPED "no benchmark model"
    elif [ "$4" = 0 ] && [ -n "$2" ]; then
        row "$1" — "$2" — PASS "$3"
    else
        row "$1" — "${2:-—}" — FAIL "$5"
    fi
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else printf "—" }'; }
# After cft's `batch N:` line, its `with drafts` line: "<tokens/s> tokens/s, <stood> of <proposed>".
draft_rate() {
    awk -v b="$2" '$1 == "batch" { at = ($2 + 0 == b) } at && $1 == "with" && $2 == "drafts" {
        for (i = 1; i <= NF; i++) { if ($i == "tokens/s,") r = $(i - 1); if ($i == "draft") s = $(i - 3) " of " $(i - 1) }
        print r " tokens/s, " s " draft tokens stood"; at = 0 }' "$1" 2>/dev/null | tail -1
}
# The tokens/s of `batch N:` lines (cft bench generate and bench_transformers.py alike).
rate() {
    awk -v b="$2" '$1 == "batch" && $2 + 0 == b { for (i = 2; i <= NF; i++) if ($i == "tokens/s") print $(i - 1) }' \
        "$1" 2>/dev/null | tail -1
}

# Python: the transformers side, and the benchmark model's maker. One interpreter start: it
# prints why the Python steps cannot run, or "ok" and the versions.
PY_SKIP="$PYTHON not found"
if command -v "$PYTHON" >/dev/null; then
    PY_SKIP=$("$PYTHON" - "$DEVICE" 2>/dev/null <<'EOF'
import sys
try:
    import torch
except Exception:
    sys.exit(print("torch not installed"))
try:
    import transformers
except Exception:
    sys.exit(print("transformers not installed"))
if sys.argv[1] != "cpu" and not torch.cuda.is_available():
    sys.exit(print("torch sees no CUDA device"))
print(f"ok torch {torch.__version__}, transformers {transformers.__version__}")
EOF
    )
    PY_SKIP=${PY_SKIP:-"$PYTHON failed to start"}
fi
case "$PY_SKIP" in
    "ok "*) PY_VERSIONS=${PY_SKIP#ok } PY_SKIP="" ;;
esac
[ -z "$PY_SKIP" ] || log "Python steps will be SKIPPED: $PY_SKIP"

# 1. parity on the fixtures
step parity "$CFT_BIN" check parity --fixtures tests/fixtures/models --device "$DEVICE"
for family in qwen2 qwen3 llama olmo2; do
    name="parity $family: logits, greedy, batched, score (max abs diff)"
    lines=$(awk -v f="$family" '$1 == f && $3 == "max"' "$WORK/parity.log" 2>/dev/null)
    if [ -z "$lines" ]; then
        row "$name" — — — FAIL "$(why parity)"
        continue
    fi
    worst=$(echo "$lines" | awk '{ if (NR == 1 || $5 + 0 > w + 0) w = $5 } END { print w }')
    notes="$(echo "$lines" | awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $2, $5 }'); tolerance 1e-4"
    if [ "$(echo "$lines" | grep -c 'PASS$')" = 4 ]; then
        row "$name" "$worst" "saved outputs" — PASS "$notes"
    else
        # the first mismatches cft printed under the family's lines, or why the step ended
        detail=$(awk -v f="$family" '$1 == f { on = 1; next } /^[^ ]/ { on = 0 } on' "$WORK/parity.log" |
            head -2 | sed 's/^ *//' | tr '|' '/' | tr '\n' ' ')
        [ "$(echo "$lines" | wc -l)" = 4 ] || detail="$detail$(why parity)"
        row "$name" "$worst" "saved outputs" — FAIL "$notes; $detail"
    fi
done

# 2. the benchmark model: transformers' own when it is there, else cft's
MODEL=$WORK/bench-model
MAKER="" MAKER_FAIL=""
if [ -z "$PY_SKIP" ]; then
    step model "$PYTHON" scripts/bench_transformers.py --make "$MODEL" --shape "$SHAPE"
    [ "$STEP_RC" = 0 ] && MAKER="transformers" || MAKER_FAIL="transformers failed ($(why model))"
fi
if [ -z "$MAKER" ]; then
    step model "$CFT_BIN" check make-model "$MODEL" --shape "$SHAPE"
    [ "$STEP_RC" = 0 ] && MAKER="cft check make-model (${MAKER_FAIL:-$PY_SKIP})"
fi
if [ -n "$MAKER" ]; then
    row "benchmark model" — — — PASS "random, $SHAPE shape, written by $MAKER"
else
    row "benchmark model" — — — FAIL "${MAKER_FAIL:+$MAKER_FAIL; then }$(why model)"
fi

# 3. batched greedy decoding, cft then transformers
if [ -n "$MAKER" ]; then
    step generate "$CFT_BIN" bench generate --model "$MODEL" --device "$DEVICE" \
        --batch "$BATCHES" --new-tokens "$NEW_TOKENS" --draft 4
    GEN_RC=$STEP_RC GEN_WHY=$(why generate)
    if [ -z "$PY_SKIP" ]; then
        step generate-tf "$PYTHON" scripts/bench_transformers.py --model "$MODEL" --device "$DEVICE" \
            --batch "$BATCHES" --new-tokens "$NEW_TOKENS"
        TF_GEN_RC=$STEP_RC TF_GEN_WHY=$(why generate-tf)
    fi
fi
for b in ${BATCHES//,/ }; do
    name="generate batch $b (tokens/s, $NEW_TOKENS new tokens)"
    if [ -z "$MAKER" ]; then
        row "$name" — — — SKIPPED "no benchmark model"
        continue
    fi
    c=$(rate "$WORK/generate.log" "$b")
    t=$(rate "$WORK/generate-tf.log" "$b")
    if [ "$GEN_RC" = 0 ] && [ -n "$c" ]; then
        d=$(draft_rate "$WORK/generate.log" "$b")
        row "$name" "$c" "${t:-—}" "$(ratio "$c" "${t:-0}")" PASS \
            "greedy, prompt 32 tokens, time includes prefill; with drafts of up to 4 (every 6th wrong): ${d:-—}"
    else
        row "$name" "${c:-—}" "${t:-—}" — FAIL "$GEN_WHY"
    fi
done
tf_row "transformers generate" \
    "$(awk '$1 == "batch" { printf "%s%s", (n++ ? " / " : ""), $(NF - 1) }' "$WORK/generate-tf.log" 2>/dev/null)" \
    "model.generate, eager attention, f32; batch ${BATCHES//,/ \/ }" "$TF_GEN_RC" "$TF_GEN_WHY"

# 4. a training step, cft then torch
TRAIN_NAME="train (training tokens/s, ${TRAIN_ARGS[*]})"
train_rate() { grep -oE '[0-9.]+ training tokens/s' "$1" 2>/dev/null | awk '{ print $1 }' | tail -1; }
if [ -n "$MAKER" ]; then
    step train "$CFT_BIN" bench train --model "$MODEL" --device "$DEVICE" "${TRAIN_ARGS[@]}"
    TRAIN_RC=$STEP_RC TRAIN_WHY=$(why train)
    if [ -z "$PY_SKIP" ]; then
        step train-tf "$PYTHON" scripts/bench_train_transformers.py --model "$MODEL" --device "$DEVICE" \
            "${TRAIN_ARGS[@]}"
        TF_TRAIN_RC=$STEP_RC TF_TRAIN_WHY=$(why train-tf)
    fi
    c=$(train_rate "$WORK/train.log")
    t=$(train_rate "$WORK/train-tf.log")
    if [ "$TRAIN_RC" = 0 ] && [ -n "$c" ]; then
        row "$TRAIN_NAME" "$c" "${t:-—}" "$(ratio "$c" "${t:-0}")" PASS "SFT loss, backward, clipping, AdamW, f32"
    else
        row "$TRAIN_NAME" "${c:-—}" "${t:-—}" — FAIL "$TRAIN_WHY"
    fi
else
    row "$TRAIN_NAME" — — — SKIPPED "no benchmark model"
fi
tf_row "transformers train" "$(train_rate "$WORK/train-tf.log")" \
    "SFT loss, backward, clipping, AdamW, f32, eager attention" "$TF_TRAIN_RC" "$TF_TRAIN_WHY"

# 5. the reduced quickstart, end to end on the device, and its report
MANIFEST=experiments/checks/reduced.toml
CACHE=$WORK/reduced-cache
step reduced "$CFT_BIN" run "$MANIFEST" --device "$DEVICE" --cache "$CACHE" --quiet
REDUCED_RC=$STEP_RC REDUCED_WHY=$(why reduced) REDUCED_S=$STEP_S
REPORT=$CACHE/reports/check-reduced/report.md
if [ "$REDUCED_RC" = 0 ]; then
    "$CFT_BIN" report "$MANIFEST" --cache "$CACHE" --format md >"$WORK/report.log" 2>&1
fi
done_line=$(grep -oE 'done: [0-9]+ stages ran' "$WORK/reduced.log" 2>/dev/null | tail -1)
if [ "$REDUCED_RC" = 0 ] && [ -s "$REPORT" ] && grep -q '| Strict-3 |' "$REPORT"; then
    row "reduced quickstart (s)" "$REDUCED_S" — — PASS "${done_line#done: }; report written ($(wc -l <"$REPORT") lines)"
elif [ "$REDUCED_RC" = 0 ]; then
    row "reduced quickstart (s)" "$REDUCED_S" — — FAIL "ran, but no report with a Strict-3 row at $REPORT"
else
    row "reduced quickstart (s)" — — — FAIL "$REDUCED_WHY"
fi

# 6. sequential against batched rollouts on the reduced quickstart's model
step annotate "$CFT_BIN" bench annotate --manifest "$MANIFEST" --examples 4 --json --draft 8 \
    --device "$DEVICE" --cache "$CACHE"
json=$(grep '^{' "$WORK/annotate.log" 2>/dev/null | tail -1)
field() { echo "$json" | grep -oE "\"$1\":[-0-9.e]+" | cut -d: -f2 | awk '{ printf "%.3g", $1 }'; }
if [ "$STEP_RC" = 0 ] && [ -n "$json" ]; then
    row "annotate, batched rollouts (s)" "$(field batched_s)" — — PASS \
        "sequential $(field sequential_s) s, speedup $(field speedup)x, without drafts $(field no_draft_s) s, identical annotations, 4 examples"
else
    row "annotate, batched rollouts (s)" — — — FAIL "$(why annotate)"
fi

# 7. the host-side optimiser (strategy = "offload") and the training state file
OFFLOAD_NAME="train offload (training tokens/s, ${TRAIN_ARGS[*]})"
if [ -n "$MAKER" ]; then
    step offload "$CFT_BIN" bench train --model "$MODEL" --device "$DEVICE" "${TRAIN_ARGS[@]}" \
        --strategy offload --save-state
    c=$(train_rate "$WORK/offload.log")
    state=$(grep '^state file' "$WORK/offload.log" 2>/dev/null | tail -1)
    if [ "$STEP_RC" = 0 ] && [ -n "$c" ] && [ -n "$state" ]; then
        row "$OFFLOAD_NAME" "$c" — — PASS "f32 master weights and Adam moments in host memory, updated by CPU threads"
        save_s=$(echo "$state" | grep -oE 'save [0-9.]+ s' | grep -oE '[0-9.]+')
        row "training state save (s)" "$save_s" — — PASS "$(echo "$state" | tr '|' '/')"
    else
        row "$OFFLOAD_NAME" "${c:-—}" — — FAIL "$(why offload)"
        row "training state save (s)" — — — FAIL "$(why offload)"
    fi
else
    row "$OFFLOAD_NAME" — — — SKIPPED "no benchmark model"
    row "training state save (s)" — — — SKIPPED "no benchmark model"
fi

# 8. the device's f32 matrix-product rate
step gemm "$CFT_BIN" bench gemm --device "$DEVICE" "${GEMM_ARGS[@]}"
peak=$(grep -oE '^peak: [0-9.]+' "$WORK/gemm.log" 2>/dev/null | grep -oE '[0-9.]+$')
if [ "$STEP_RC" = 0 ] && [ -n "$peak" ]; then
    row "f32 matrix products, best (GFLOP/s)" "$peak" — — PASS "cft bench gemm ${GEMM_ARGS[*]}: square and decoding-step shapes; tokens/s x 2 x parameters reads against it"
else
    row "f32 matrix products, best (GFLOP/s)" — — — FAIL "$(why gemm)"
fi

# The table
if [ "$DEVICE" = cpu ]; then
    MACHINE="CPU: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null), $(nproc) cores"
else
    GPU_INDEX=${DEVICE#cuda}
    GPU_INDEX=${GPU_INDEX#:}
    MACHINE=$(nvidia-smi --id="${GPU_INDEX:-0}" --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1)
    MACHINE=${MACHINE:-"no answer from nvidia-smi"}
fi
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo "unknown commit")
{
    echo "\`scripts/gpu-check.sh --device $DEVICE\` on $MACHINE, $(date -u +%Y-%m-%d) ($("$CFT_BIN" --version 2>/dev/null), $COMMIT; ${PY_VERSIONS:-Python steps skipped: $PY_SKIP}); $((SECONDS - START)) s in all"
    echo
    echo "| check | cft | transformers | cft / transformers | result | notes |"
    echo "| --- | ---: | ---: | ---: | --- | --- |"
    printf '%s\n' "${ROWS[@]}"
} >"$WORK/table.md"
if ! cp "$WORK/table.md" "$OUT_FILE" 2>/dev/null; then
    log "could not write $OUT_FILE"
fi
echo
cat "$WORK/table.md"
echo
echo "(written to $OUT_FILE; logs of every step under $WORK)"
[ "$FAILED" = 0 ]
