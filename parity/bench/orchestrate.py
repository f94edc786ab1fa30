"""The CPU bench's parent: one worker process per configuration, measurements handed out one at a time,
round-robin, each after waiting for a quiet machine; then throughputs, ratios and the goals.

Rules: the workers live for the whole run and the parent asks one of them at a time (the starting one
rotates every repetition), so a change of machine load hits all alike; warm-up is timed apart; for every
measurement the CPU other processes used meanwhile and the 1-minute load average are recorded.
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
from typing import Any, Sequence

from ddpm_core.runtime.environment import ISA, child_env, default_threads
from parity.bench.load import Foreign, cpu_seconds, wait_quiet
from parity.bench.workloads import CONFIGS, MARK, REPO, T

TARGETS = (  # (name, numerator, denominator, kind, threshold): the goals of issue #6
    ("ms compiled training vs the tutorial as written", "ms_compiled", "tutorial", "train", 3.0),
    ("ms compiled sampling vs ms PyNative", "ms_compiled", "ms_pynative", "sample", 5.0),
    ("ms training throughput vs torch's best", "ms_compiled", "torch_channels_last", "train", 0.5),
    ("torch best path vs torch eager (training)", "torch_channels_last", "torch_eager", "train", 1.3),
)
TORCH_TRAIN_IMAGES_TARGET = 75.0
CHECK_WALL_TARGET_S = 60.0


class Worker:
    """One configuration's process: ``--worker NAME`` with its own environment, one command at a time.

    Every worker gets ``OMP_NUM_THREADS``: the caller's, else all cores (the bench waits for a quiet machine
    and measures what the machine can do); MindSpore keeps its own CPU pool default; ``tutorial_default_isa`` runs without the
    oneDNN ISA pin, every other configuration with it."""

    def __init__(self, name: str, args: argparse.Namespace, log_dir: Path):
        isa = ISA if name != "tutorial_default_isa" else False
        env = child_env(threads=default_threads(load=0.0), pythonpath=REPO, isa=isa, GLOG_v="3")
        self.name, self.log = name, log_dir / f"{name}.log"
        with open(self.log, "wb") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "parity.bench", "--worker", name, "--batch", str(args.batch),
                 "--image-size", str(args.image_size), "--model-config", args.model_config.to_json()],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=REPO)

    def read(self) -> dict[str, Any]:
        for line in self.proc.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        tail = self.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"worker {self.name} exited with status {self.proc.wait()}:\n{tail}")

    def ask(self, command: str) -> dict[str, Any]:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> dict[str, Any]:
        out = self.ask("exit")
        self.proc.wait()
        return out


def stats(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """Start every worker, warm each up, then ``--repeats`` round-robin rounds of training and sampling."""
    k = args.sample_steps
    results: dict[str, dict[str, Any]] = {}
    workers: dict[str, Worker] = {}
    try:
        for name in args.configs:  # one at a time, so imports and builds do not overlap either
            workers[name] = Worker(name, args, log_dir)
            ready = workers[name].read()
            results[name] = {"label": CONFIGS[name], "isa": ready["isa"], "setup_s": ready["ready"], "train_s": [],
                             "sample_s": [], "load": [], "foreign_cores": [], "idle_cpu_s": 0.0}
        pids = [w.proc.pid for w in workers.values()]

        def timed(name: str, command: str) -> float:
            wait_quiet(pids, args.quiet_wait)
            idle = {n: cpu_seconds(w.proc.pid) for n, w in workers.items() if n != name}
            load0, window = os.getloadavg()[0], Foreign(pids)
            seconds = workers[name].ask(command)["seconds"]
            r = results[name]
            r["foreign_cores"].append(window.cores())
            r["load"] += [load0, os.getloadavg()[0]]
            for n, c in idle.items():  # a framework whose threads spin while idle would show here
                results[n]["idle_cpu_s"] += cpu_seconds(workers[n].proc.pid) - c
            return seconds

        for name in workers:
            results[name]["warmup_train_s"] = timed(name, "train 1")
            results[name]["warmup_sample_s"] = timed(name, f"sample {k}")
        order = list(workers)
        for r in range(args.repeats):
            rotated = order[r % len(order):] + order[:r % len(order)]
            for kind, command in (("train", f"train {args.train_steps}"), ("sample", f"sample {k}")):
                for name in rotated:
                    results[name][f"{kind}_s"].append(timed(name, command))
        for name, w in workers.items():
            results[name].update(w.close())
    finally:
        for w in workers.values():
            if w.proc.poll() is None:
                w.proc.kill()
    return results


def summarise(results: dict[str, dict[str, Any]], args: argparse.Namespace, machine: dict[str, Any]) -> dict[str, Any]:
    """Throughputs (images/s), ratios against the tutorial, share of the measured peak."""
    b, k = args.batch, args.sample_steps
    base = "tutorial" if "tutorial" in results else None
    for name, r in results.items():
        r["train_images_per_s"] = stats([b * args.train_steps / s for s in r["train_s"]])
        r["sample_images_per_s"] = stats([b / (s * T / k) for s in r["sample_s"]])
        r["load_1min"] = {"min": min(r["load"]), "max": max(r["load"])}
        r["foreign_cores_max"] = max(r["foreign_cores"])
        for kind, flops in (("train", machine.get("flops_per_image_train_step")),
                            ("sample", None if "flops_per_image_forward" not in machine
                             else machine["flops_per_image_forward"] * T)):
            ips = r[f"{kind}_images_per_s"]["median"]
            r[f"{kind}_fraction_of_peak"] = (ips * flops / machine["peak_flops_measured"]
                                             if flops and machine.get("peak_flops_measured") else None)
            r[f"{kind}_vs_tutorial"] = ips / results[base][f"{kind}_images_per_s"]["median"] if base else None
    return results


def targets(results: dict[str, dict[str, Any]], check: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal of issue #6 with the measured ratio (medians) and whether it is met; None where not measured."""
    out = []
    for what, num, den, kind, threshold in TARGETS:
        value = (results[num][f"{kind}_images_per_s"]["median"] / results[den][f"{kind}_images_per_s"]["median"]
                 if num in results and den in results else None)
        out.append({"target": what, "value": value, "threshold": threshold, "unit": "×",
                    "met": None if value is None else value >= threshold})
    tf = results.get("torch_channels_last", {}).get("train_images_per_s", {}).get("median")
    out.append({"target": "torch best path training images/s", "value": tf, "threshold": TORCH_TRAIN_IMAGES_TARGET,
                "unit": "images/s", "met": None if tf is None else tf >= TORCH_TRAIN_IMAGES_TARGET})
    wall = check.get("wall_s")
    out.append({"target": "python -m parity.check wall time", "value": wall, "threshold": CHECK_WALL_TARGET_S,
                "unit": "s (at most)", "met": None if wall is None else (wall <= CHECK_WALL_TARGET_S and check["exit_code"] == 0)})
    return out


def run_check(enabled: bool, quiet_wait: float) -> dict[str, Any]:
    """Wall time of the default ``python -m parity.check`` (imports included), run on its own."""
    if not enabled:
        return {"wall_s": None, "note": "skipped (--no-check)"}
    wait_quiet([], quiet_wait)
    load0, window, t0 = os.getloadavg()[0], Foreign([]), time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "parity.check", "--no-progress"], cwd=REPO, capture_output=True,
                          text=True, env=child_env(pythonpath=REPO))
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "exit_code": proc.returncode, "load_1min": [load0, os.getloadavg()[0]],
            "foreign_cores": window.cores(), "output_tail": (proc.stdout + proc.stderr)[-2000:] if proc.returncode else ""}
