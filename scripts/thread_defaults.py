"""Side by side: a training step of each twin with 1 intra-op thread and with every core, on a quiet machine
and on a busy one (``--spin N`` processes that spin, started and stopped here), and which count
``ddpm_core.runtime.environment.default_threads`` picks in each case. The measurements behind the thread default
(docs/training.md, "Threads").

    python scripts/thread_defaults.py [--spin 2] [--steps 4] [--batch 8] [--frameworks torch,ms]

Each run is its own process (``OMP_NUM_THREADS`` for PyTorch; MindSpore's ``threads_num``, and its own
default pool for the "MindSpore default" row): the tutorial U-Net, one warm-up step, then ``--steps`` timed
steps (PyTorch channels-last eager, MindSpore PyNative); the median step is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ddpm_core.runtime.environment import child_env, cores, default_threads

REPO = Path(__file__).resolve().parents[1]
MARK = "@@threads "


def child(framework: str, threads: int, steps: int, batch: int) -> None:
    """One measurement: the median seconds of ``steps`` training steps after one warm-up step."""
    import numpy as np

    from ddpm_core.config import TUTORIAL_UNET

    rng = np.random.default_rng(0)
    shape = (batch, 1, 28, 28)
    x, t = rng.uniform(-1, 1, shape).astype(np.float32), rng.integers(0, 200, batch).astype(np.int32)
    noise = rng.standard_normal(shape).astype(np.float32)
    if framework == "ms":
        import mindspore as ms

        if threads:  # 0: MindSpore's own pool default
            ms.device_context.cpu.op_tuning.threads_num(threads)
        import ddpm_ms as twin
        from ddpm_ms import optim
    else:
        import ddpm_torch as twin
        from ddpm_torch import optim
    model = twin.Unet.from_config(TUTORIAL_UNET)
    fast_path = {"channels_last": True} if framework == "torch" else {"compiled": False}  # PyNative
    step = optim.make_train_step(model, twin.GaussianDiffusion(), optim.make_optimizer(model, 1e-4), **fast_path)
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        float(step(x, t, noise))
        times.append(time.perf_counter() - t0)
    print(MARK + json.dumps({"step_s": statistics.median(times[1:])}), flush=True)


def run(framework: str, threads: int, args: argparse.Namespace) -> float:
    env = child_env(threads=threads or None, pythonpath=REPO)
    out = subprocess.run([sys.executable, __file__, "--child", framework, str(threads), "--steps", str(args.steps),
                          "--batch", str(args.batch)], env=env, cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(next(ln for ln in out.stdout.splitlines() if ln.startswith(MARK))[len(MARK):])["step_s"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spin", type=int, default=cores(), help="busy processes for the busy case (default: the cores)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frameworks", default="torch,ms")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.steps, args.batch)
        return 0
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), "unknown CPU")
    n = cores()
    print(f"{model}, {n} cores; tutorial U-Net, batch {args.batch}, median of {args.steps} steps after 1 warm-up")
    print("| machine | framework | threads | s/step | vs 1 thread | default_threads() picks |")
    print("|---|---|---|---|---|---|")
    for case in ("quiet", "busy"):
        spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.spin)] \
            if case == "busy" else []
        try:
            time.sleep(2.0)
            label = (f"as found (1-min load {os.getloadavg()[0]:.2f})" if case == "quiet"
                     else f"busy ({args.spin} spinning processes)")
            picks = default_threads({}, n, os.getloadavg()[0] if case == "quiet" else float(args.spin))
            for fw in args.frameworks.split(","):
                counts = [1, n] + ([0] if fw == "ms" else [])
                one = None
                for k in counts:
                    s = run(fw, k, args)
                    one = s if k == 1 else one
                    name = "MindSpore default pool" if k == 0 else str(k)
                    print(f"| {label} | {fw} | {name} | {s:.3f} | {s / one:.2f}x | {picks} |", flush=True)
        finally:
            for proc in spinners:
                proc.kill()
                proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
