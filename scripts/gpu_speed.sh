#!/usr/bin/env bash
# Issue 24 on a GPU in one call: parity of the fast paths, the batch sweep, the profile and torch.compile,
# within 8 minutes, into at most 8 files (docs/performance.md, "GPU speed: the prepared run").
#
#     scripts/gpu_speed.sh OUT_DIR            on a CUDA machine (PYTHON=... picks the interpreter; default python3)
#     scripts/gpu_speed.sh OUT_DIR --cpu      the same steps on the CPU at toy sizes (a dry run: every code path
#                                             but the CUDA graph capture itself; torch.compile disabled, so eager)
#     scripts/gpu_speed.sh OUT_DIR [--cpu] --plan   print each step (name, budget in s, command), run nothing
#
# Steps, each under `timeout` with its own budget (cut to what is left of TOTAL_S); one that fails or runs out
# of time does not stop the others. Budgets from the H200 run of 2026-12-04 (../shared/measurements/
# h200-2026-12-04: a parity.check record 8 s on the GPU, a bench configuration 5-10 s, torch.compile 93 s):
#   fastcheck  python -m parity.bench.fastcheck: training (foreach Adam, the step as one CUDA graph) and the
#              sampling loop as one CUDA graph against the eager twin and against float64     -> fastcheck.json
#   record     python -m parity.check record --framework torch --torch-device cuda --compile on (the graphed
#              sampling loop) for `parity.check compare --framework ms` on a MindSpore host -> golden_torch_cuda.npz
#   sweep      python -m parity.bench --device cuda --batches 16..2048: the batch that fills the GPU per
#              configuration, and issue 24's goals; rewritten after every point         -> sweep.json, sweep.md
#   profile    torch.profiler top kernels, before (eager_loop_adam) and after (graph, graph_bf16), at the
#              graph configuration's best training batch from the sweep                  -> profile.txt
#   compile    torch.compile modes at that batch, beside graph (whatever time is left)   -> compile.json, compile.md
# Every command's output and the machine's description go to log.txt; the last lines of stdout are the step
# summary and the goals. Exit status: 0 when every step passed, 1 otherwise, 2 for a usage error.
set -uo pipefail
usage() { echo "usage: scripts/gpu_speed.sh OUT_DIR [--cpu] [--plan]" >&2; exit 2; }
[ "$#" -ge 1 ] && [ -n "$1" ] && [ "${1:0:1}" != "-" ] || usage
OUT=$1
CPU=0
PLAN=0
shift
for arg in "$@"; do
  case $arg in
    --cpu) CPU=1 ;;
    --plan) PLAN=1 ;;
    *) usage ;;
  esac
done
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH=$PWD
PY=${PYTHON:-$(command -v python3 || command -v python)}
TOTAL_S=465    # 8 minutes, less 15 s for start-up and the summary
START=$(date +%s)
STATUS=0

if [ "$CPU" = 1 ]; then   # toy sizes: every step in a couple of minutes on two cores
  DEV=cpu
  TOY=(--image-size 8)
  CFG='{"dim": 8, "channels": 1, "dim_mults": [1, 2]}'
  FAST=(--config "$CFG" --image-size 8 --batch 2 --timesteps 10 --train-steps 3)
  REC=(--config "$CFG" --image-size 8 --timesteps 10 --ddim-steps 5 --checks predict,loss,grad,ddpm,ddim,probes)
  SWEEP=(--model-config "$CFG" "${TOY[@]}" --batches 2,4 --train-steps 2 --sample-steps 4 --repeats 1
         --sweep-images 4 --sweep-sample-images 8)
  PROFILE=(--model-config "$CFG" "${TOY[@]}" --train-steps 2 --sample-steps 3)
  BENCH=(--model-config "$CFG" "${TOY[@]}" --train-steps 2 --sample-steps 3 --repeats 1)
  COMPILE_ENV=(env TORCH_COMPILE_DISABLE=1)  # torch.compile runs eagerly: inductor's C++ build takes minutes here
  FALLBACK_BATCH=4
else
  DEV=cuda
  FAST=(--batch 4 --timesteps 200 --train-steps 3)
  REC=(--checks predict,loss,grad,ddpm,ddim,probes)
  SWEEP=(--batches 16,32,64,128,256,512,1024,2048 --repeats 2)
  PROFILE=(--train-steps 3 --sample-steps 10)
  BENCH=(--train-steps 5 --sample-steps 10 --repeats 2)
  COMPILE_ENV=()
  FALLBACK_BATCH=512
fi
SWEEP_CONFIGS=graph,graph_bf16,eager,graph_channels_last,graph_bf16_nchw,amp_bf16
COMPILE_CONFIGS=graph,compile_reduce_overhead,graph_compile,compile_max_autotune
PROFILE_CONFIGS=eager_loop_adam,graph,graph_bf16

if [ "$PLAN" = 0 ]; then
  mkdir -p "$OUT" || exit 2
  LOG="$OUT/log.txt"
  {
    echo "gpu_speed.sh on $DEV at $(date -Is), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.sm --format=csv 2>&1 || echo "nvidia-smi: not available"
    lscpu 2>/dev/null | grep -E 'Model name|^CPU\(s\)' || true
    "$PY" -c "import sys, numpy, torch; print('python', sys.version.split()[0], 'numpy', numpy.__version__, 'torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())" 2>&1
  } > "$LOG"
fi
SUMMARY=""

run() {  # run NAME BUDGET_S CMD...: CMD under timeout (its budget, or what is left), its output appended to log.txt
  local name=$1 budget=$2
  shift 2
  if [ "$PLAN" = 1 ]; then
    printf 'STEP %s %s' "$name" "$budget"; printf ' %q' "$@"; printf '\n'
    return
  fi
  local left=$(( TOTAL_S - ($(date +%s) - START) ))
  [ "$budget" -gt "$left" ] && budget=$left
  if [ "$budget" -lt 20 ]; then
    SUMMARY+="$name: skipped (only ${left} s of ${TOTAL_S} left)"$'\n'
    STATUS=1
    return
  fi
  echo "=== $name (budget ${budget} s): $*" >> "$LOG"
  local t0=$SECONDS
  timeout --kill-after=10 "$budget" "$@" >> "$LOG" 2>&1
  local rc=$?
  local why=""
  { [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; } && why=" (ran past its ${budget} s budget)"
  SUMMARY+="$name: exit $rc in $(( SECONDS - t0 )) s$why"$'\n'
  echo "=== $name: exit $rc in $(( SECONDS - t0 )) s$why" >> "$LOG"
  [ "$rc" -eq 0 ] || STATUS=1
}

best_batch() {  # the graph configuration's best training batch in sweep.json, else FALLBACK_BATCH
  [ "$PLAN" = 1 ] && { echo "$FALLBACK_BATCH"; return; }
  "$PY" - "$OUT/sweep.json" "$FALLBACK_BATCH" <<'EOF' 2>/dev/null || echo "$FALLBACK_BATCH"
import json, sys
try:
    best = json.load(open(sys.argv[1]))["sweep"]["graph"]["best"]["train"]
    print(best["batch"] if best else sys.argv[2])
except (OSError, KeyError, ValueError):
    print(sys.argv[2])
EOF
}

run fastcheck 50 "$PY" -m parity.bench.fastcheck --device "$DEV" "${FAST[@]}" --json "$OUT/fastcheck.json"
run record 40 "$PY" -m parity.check record --framework torch --torch-device "$DEV" --compile on "${REC[@]}" \
    --out "$OUT/golden_torch_$DEV.npz" --no-progress
run sweep 200 "$PY" -m parity.bench --device cuda --torch-device "$DEV" --configs "$SWEEP_CONFIGS" "${SWEEP[@]}" \
    --budget-s 160 --json "$OUT/sweep.json" --markdown "$OUT/sweep.md"
BATCH=$(best_batch)
run profile 50 "$PY" -m parity.bench --device cuda --torch-device "$DEV" --configs "$PROFILE_CONFIGS" "${PROFILE[@]}" \
    --batch "$BATCH" --profile "$OUT/profile.txt"
run compile 300 ${COMPILE_ENV[@]+"${COMPILE_ENV[@]}"} "$PY" -m parity.bench --device cuda --torch-device "$DEV" --configs "$COMPILE_CONFIGS" "${BENCH[@]}" \
    --batches "$BATCH" --sweep-images 1e9 --sweep-sample-images 1 --json "$OUT/compile.json" --markdown "$OUT/compile.md"

[ "$PLAN" = 1 ] && exit 0
SUMMARY+="total: $(( $(date +%s) - START )) s, batch for profile and compile: $BATCH"$'\n'
echo "$SUMMARY" >> "$LOG"
grep -E '^(ok|FAILED) |^fast paths' "$LOG" || true
[ -f "$OUT/sweep.md" ] && sed -n '/^| goal (issue 24)/,$p' "$OUT/sweep.md"
[ -f "$OUT/sweep.md" ] && grep -E '^Sampling, the graphed loop' "$OUT/sweep.md"
printf '%s' "$SUMMARY"
exit "$STATUS"
