"""The loss curve of ``--precision bf16`` / ``fp16`` against float32's, for each twin: the same run (digits, the
recipe of docs/quality.md, the same seed, so the same initial weights and the same per-step tape) trained once
per precision through the twins' own commands, then compared step by step. The figures behind
docs/training.md, "Precision".

    python scripts/precision_curves.py [--steps 299] [--out precision_runs] [--device cpu] [--ms-device CPU]

Per twin and precision it prints the wall time, the mean loss of the last 50 steps, and against float32: the
median and largest relative difference of a step's loss, and the mean over the run. bfloat16 on MindSpore's CPU
is refused (exit 3) and reported as such.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ddpm_core.runtime.environment import child_env
from ddpm_core.training.digits import RECIPE

REPO = Path(__file__).resolve().parents[1]


def losses(run: Path) -> np.ndarray:
    return np.array([json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", default="299", help="global steps (13 epochs of the digits' 23 steps: 299)")
    p.add_argument("--out", default="precision_runs")
    p.add_argument("--device", default="cpu", help="the PyTorch twin's --device")
    p.add_argument("--ms-device", default="CPU", help="the MindSpore twin's --device")
    p.add_argument("--twins", default="torch,ms")
    args = p.parse_args()
    out = Path(args.out)
    options = [x for option, value in RECIPE.items() for x in (f"--{option}", value)]
    print(f"{'twin':6} {'precision':9} {'wall s':>7} {'last-50 mean':>12} {'median rel':>10} {'max rel':>9} "
          f"{'run-mean rel':>12}")
    for twin in args.twins.split(","):
        curves = {}
        for precision in ("fp32", "bf16", "fp16"):
            run = out / f"{twin}-{precision}"
            device = args.device if twin == "torch" else args.ms_device
            cmd = [sys.executable, "-m", f"ddpm_{twin}.train", "--data", "digits", "--out", str(run), *options,
                   "--max-steps", args.steps, "--precision", precision, "--device", device, "--no-progress"]
            start = time.perf_counter()
            done = subprocess.run(cmd, env=child_env(pythonpath=REPO), capture_output=True, text=True)
            wall = time.perf_counter() - start
            if done.returncode != 0:
                refused = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
                print(f"{twin:6} {precision:9} exit {done.returncode}: {refused[-1] if refused else done.stderr[-300:]}")
                continue
            curves[precision] = c = losses(run)
            rel = np.abs(c - curves["fp32"]) / curves["fp32"]
            print(f"{twin:6} {precision:9} {wall:7.0f} {c[-50:].mean():12.5f} {np.median(rel):10.2e} {rel.max():9.2e} "
                  f"{abs(c.mean() - curves['fp32'].mean()) / curves['fp32'].mean():12.2e}", flush=True)


if __name__ == "__main__":
    main()
