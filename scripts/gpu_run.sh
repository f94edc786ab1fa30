#!/usr/bin/env bash
# The GPU run, prepared to the last command (issues #15, #22): what a short lease on a PyTorch-only CUDA host
# runs, in one call, within 8 minutes. MindSpore is not needed there: the goldens recorded here are compared
# on a MindSpore host afterwards (docs/hosts.md, "A GPU host").
#
#     scripts/gpu_run.sh OUT_DIR        from anywhere; PYTHON=... picks the interpreter (default python, else
#                                       python3); PYTHONPATH is kept (after the repository), e.g. for a pytest
#                                       installed with pip install --target DIR pytest
#
# Steps, each under `timeout` with a budget from the times an H200 measured (measurements/h200-2026-12-04):
#   record           parity.check record --framework torch --torch-device cuda: the tutorial configuration
#                    (predict,loss,grad,ddpm,ddim,probes)                               8 s on the GPU
#   record_adam      the same, --checks adam --train-steps 1                              one Adam step
#   record_small     seed 1, batch 8, dim 16 at 16x16
#   cuda_tests       python -m pytest -m cuda tests: the suite's CUDA tests (MindSpore's skip, saying why)
#   train            ddpm_torch.train --device cuda on the digits, only where train has --device
#   bench_cuda       parity.bench --device cuda: eager, channels-last, TF32, AMP fp16/bf16, CUDA graph
#                    (101 s of timed work on the H200, plus the peak measurement and start-up)
#   bench_compile    torch.compile beside channels-last, last: 93 s on the H200 (cut off once at 110 s)
# A step that fails or runs past its budget does not stop the others; a step's budget is cut to what is left
# of TOTAL_S, and a step left with under 20 s is skipped (exit status 1); a step the host lacks the means for
# (pytest, --device, scikit-learn) is skipped with its reason and does not change the exit status. OUT_DIR gets three files: summary.txt (each step's
# exit status and seconds, and the next command), machine.txt, and gpu_run.tar.gz (gpu_run/: the goldens, each
# step's .log and .json, bench_*.md, summary.txt, machine.txt). Exit status: 0 when every step passed, 1 when
# one failed, timed out or was cut for time, 2 for a usage error.
#
# GPU_RUN_SMOKE=1 runs the same plan on the CPU with tiny sizes, the bench's options checked but not run
# (tests/test_gpu_run.py); GPU_RUN_TOTAL_S overrides the 8-minute total.
set -uo pipefail
if [ "$#" -ne 1 ] || [ -z "$1" ]; then
  echo "usage: scripts/gpu_run.sh OUT_DIR" >&2
  exit 2
fi
mkdir -p "$1" || exit 2
OUT=$(cd "$1" && pwd) || exit 2
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-$(command -v python || command -v python3)}
WORK="$OUT/gpu_run"
if [ -e "$WORK" ] || [ -e "$OUT/gpu_run.tar.gz" ]; then
  echo "error: $WORK or $OUT/gpu_run.tar.gz exists already; give an empty OUT_DIR" >&2
  exit 2
fi
mkdir "$WORK" || exit 2
SMOKE=${GPU_RUN_SMOKE:-0}
TOTAL_S=${GPU_RUN_TOTAL_S:-460}  # 8 minutes, less 20 s for start-up, the archive and the summary
START=$(date +%s)
STATUS=0
: > "$WORK/summary.txt"

BENCH=(--device cuda --configs eager,channels_last,tf32,amp_fp16,amp_bf16,cuda_graph --quiet-wait 0)
BENCH_COMPILE=(--device cuda --configs channels_last,compile --quiet-wait 0)
if [ "$SMOKE" = 1 ]; then  # the plan on the CPU, every size tiny: checks this script, not the GPU
  DEV=cpu
  SIZE=(--seed 3 --batch 2 --image-size 8 --timesteps 10 --ddim-steps 5 --config '{"dim": 8, "channels": 1, "dim_mults": [1, 2]}')
  SMALL=("${SIZE[@]}")
  TRAIN_SIZE=(--max-steps 2 --batch-size 4 --dim 8 --dim-mults 1,2 --timesteps 10 --keep 1)
  TESTS=(tests/parity/test_bench_cuda.py)
  BENCH_RUN=("$PY" -c "import sys; from parity.bench.cli import parse; parse(sys.argv[1:])")  # the options only
else
  DEV=cuda
  SIZE=()
  SMALL=(--seed 1 --batch 8 --config '{"dim": 16, "channels": 1, "dim_mults": [1, 2]}' --image-size 16)
  TRAIN_SIZE=(--max-steps 300 --batch-size 64 --keep 1)
  TESTS=(tests)
  BENCH_RUN=("$PY" -m parity.bench)
fi

{
  date -Is
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || echo "nvidia-smi: not available"
  lscpu 2>/dev/null | grep -E 'Model name|^CPU\(s\)' || true
  "$PY" - <<'EOF' 2>&1
import importlib, platform, sys
print("python", platform.python_version(), sys.executable)
for name in ("torch", "torchvision", "numpy", "mindspore", "pytest", "sklearn", "safetensors", "google.protobuf", "PIL"):
    try:
        m = importlib.import_module(name)
        print(name, getattr(m, "__version__", "?"))
    except Exception as e:  # noqa: BLE001 - a line per package, whatever went wrong
        print(name, "cannot be imported:", str(e).splitlines()[0] if str(e) else type(e).__name__)
import torch
print("cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
} > "$WORK/machine.txt"

say() { echo "$*" | tee -a "$WORK/summary.txt"; }

run() {  # run NAME BUDGET_S CMD...: CMD under timeout (its budget, or what is left), output into WORK/NAME.log
  local name=$1 budget=$2
  shift 2
  local left=$(( TOTAL_S - ($(date +%s) - START) ))
  [ "$budget" -gt "$left" ] && budget=$left
  if [ "$budget" -lt 20 ]; then
    say "$name: skipped (only ${left} s of the ${TOTAL_S} s left)"
    STATUS=1
    return
  fi
  local t0=$SECONDS
  timeout --kill-after=10 "$budget" "$@" > "$WORK/$name.log" 2>&1
  local rc=$?
  local why=""
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then why=" (ran past its ${budget} s budget)"; fi
  say "$name: exit $rc in $(( SECONDS - t0 )) s$why: $*"
  [ "$rc" -eq 0 ] || STATUS=1
}

skip() {  # skip NAME WHY: a step this host lacks the means for (it does not change the exit status)
  say "$1: skipped ($2)"
}

RECORD=("$PY" -m parity.check record --framework torch --torch-device "$DEV" --no-progress)
run record 50 "${RECORD[@]}" "${SIZE[@]}" --checks predict,loss,grad,ddpm,ddim,probes \
    --out "$WORK/golden_torch_$DEV.npz" --json "$WORK/record.json"
run record_adam 50 "${RECORD[@]}" "${SIZE[@]}" --checks adam --train-steps 1 \
    --out "$WORK/golden_torch_${DEV}_adam.npz" --json "$WORK/record_adam.json"
run record_small 40 "${RECORD[@]}" "${SMALL[@]}" --checks predict,loss,grad,ddpm,ddim,probes \
    --out "$WORK/golden_torch_${DEV}_small.npz" --json "$WORK/record_small.json"

if "$PY" -c "import pytest" 2>/dev/null; then
  run cuda_tests 90 "$PY" -m pytest -q -p no:cacheprovider --continue-on-collection-errors -m cuda "${TESTS[@]}" \
      --junitxml "$WORK/cuda_tests.xml"
else
  skip cuda_tests "pytest is not installed here: pip install --target DIR pytest, then PYTHONPATH=DIR"
fi

if ! "$PY" -m ddpm_torch.train --help 2>/dev/null | grep -q -- "--device"; then
  skip train "ddpm_torch.train has no --device option yet"
elif ! "$PY" -c "import sklearn, torchvision" 2>/dev/null; then
  skip train "training on the digits needs scikit-learn and torchvision"
else
  run train 45 "$PY" -m ddpm_torch.train --device "$DEV" --data digits --out "$WORK/train_digits" "${TRAIN_SIZE[@]}" \
      --no-progress
fi

run bench_cuda 150 "${BENCH_RUN[@]}" "${BENCH[@]}" --json "$WORK/bench_cuda.json" --markdown "$WORK/bench_cuda.md"
run bench_compile 150 "${BENCH_RUN[@]}" "${BENCH_COMPILE[@]}" \
    --json "$WORK/bench_compile.json" --markdown "$WORK/bench_compile.md"

say "total: $(( $(date +%s) - START )) s"
say "next, on a MindSpore host: tar xzf gpu_run.tar.gz && for g in gpu_run/golden_torch_${DEV}*.npz; do python -m parity.check compare \"\$g\" --framework ms; done"
cp "$WORK/summary.txt" "$WORK/machine.txt" "$OUT/"
if tar -czf "$OUT/gpu_run.tar.gz.part" -C "$OUT" gpu_run && mv "$OUT/gpu_run.tar.gz.part" "$OUT/gpu_run.tar.gz"; then
  rm -r "$WORK"
else
  echo "error: could not write $OUT/gpu_run.tar.gz; the files stay in $WORK" >&2
  STATUS=1
fi
exit "$STATUS"
