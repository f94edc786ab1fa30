#!/usr/bin/env bash
# The GPU run, prepared to the last command (issue #15): everything a short GPU lease should run, in one call,
# within 8 minutes, every figure and log written into one folder.
#
#     scripts/gpu_run.sh OUT_DIR            (from the repository root; PYTHON=... to pick the interpreter)
#
# 1. python -m parity.check --torch-device cuda          PyTorch on the GPU, MindSpore on the CPU beside it
# 2. python -m parity.check --precision fp16 --torch-device cuda   only if parity.check has --precision
# 3. python -m parity.bench --device cuda                eager, channels-last, TF32, AMP fp16/bf16, CUDA graph:
#                                                        training and T=200 sampling images/s, fraction of peak
# 4. the same with torch.compile (beside channels-last), in its own command and budget
# Each command runs under `timeout` with its own budget (cut to what is left of the 8 minutes); one that fails
# or times out does not stop the others. OUT_DIR gets: machine.txt, one .json and one .log per command,
# bench_*.md, and summary.txt (each command's exit code and seconds). Exit status: 0 when every command
# that ran passed, else 1; 2 for a usage error.
set -uo pipefail
if [ "$#" -ne 1 ] || [ -z "$1" ]; then
  echo "usage: scripts/gpu_run.sh OUT_DIR" >&2
  exit 2
fi
cd "$(dirname "$0")/.." || exit 2
OUT=$1
PY=${PYTHON:-python}
mkdir -p "$OUT" || exit 2
TOTAL_S=470    # 8 minutes, less 10 s for start-up and the summary
START=$(date +%s)
STATUS=0
: > "$OUT/summary.txt"

{
  date -Is
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || echo "nvidia-smi: not available"
  lscpu | grep -E 'Model name|^CPU\(s\)' || true
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())" 2>&1
  "$PY" -c "import mindspore; print('mindspore', mindspore.__version__)" 2>&1
} > "$OUT/machine.txt"

run() {  # run NAME BUDGET_S CMD...: CMD under timeout (its budget, or what is left), output into OUT/NAME.log
  local name=$1 budget=$2
  shift 2
  local left=$(( TOTAL_S - ($(date +%s) - START) ))
  [ "$budget" -gt "$left" ] && budget=$left
  if [ "$budget" -lt 20 ]; then
    echo "$name: skipped (only ${left} s of the 8 minutes left)" | tee -a "$OUT/summary.txt"
    STATUS=1
    return
  fi
  local t0=$SECONDS
  timeout --kill-after=10 "$budget" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local why=""
  [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && why=" (ran past its ${budget} s budget)"
  echo "$name: exit $rc in $(( SECONDS - t0 )) s$why: $*" | tee -a "$OUT/summary.txt"
  [ "$rc" -eq 0 ] || STATUS=1
}

run check_cuda 120 "$PY" -m parity.check --torch-device cuda --no-progress --json "$OUT/check_cuda.json"
if "$PY" -m parity.check --help 2>/dev/null | grep -q -- "--precision"; then
  run check_fp16 90 "$PY" -m parity.check --precision fp16 --torch-device cuda --no-progress --json "$OUT/check_fp16.json"
else
  echo "check_fp16: skipped (parity.check has no --precision option)" | tee -a "$OUT/summary.txt"
fi
# torch.compile apart (beside channels-last, its break-even baseline): a slow compile cannot cost the other figures
run bench_cuda 130 "$PY" -m parity.bench --device cuda --configs eager,channels_last,tf32,amp_fp16,amp_bf16,cuda_graph \
    --json "$OUT/bench_cuda.json" --markdown "$OUT/bench_cuda.md"
run bench_compile 130 "$PY" -m parity.bench --device cuda --configs channels_last,compile \
    --json "$OUT/bench_compile.json" --markdown "$OUT/bench_compile.md"
echo "total: $(( $(date +%s) - START )) s" | tee -a "$OUT/summary.txt"
exit "$STATUS"
