"""``python -m parity.quality``: do the twins train to the same quality? A benchmark, not a test (tens of
minutes on a 2-core CPU; docs/quality.md).

    python -m parity.quality [--seeds 2] [--ms-seeds M] [--n 300] [--out runs/quality] [--jobs 2] [--json PATH]
                             [--sampler ddpm|ddim] [--sample-steps K] [training options of ddpm_core.training.digits.RECIPE]

For each seed s, both twins train on scikit-learn's digits (``--data digits``) from the same initial weights
(``parity.engine.initial.initial_weights(cfg, s)``) and the same per-step tape (``--seed s``), through their own training
CLIs (MindSpore, slower on CPU, may run fewer seeds: ``--ms-seeds``); each then samples ``--n`` images through its
own sampling CLI, with its own sampling seed (so no two sets share noise). A classifier fitted to the digits'
training split scores every set (``parity.digit_scores``), and the KID on its features measures:

  * twin vs twin: torch seed s against MindSpore seed s (same start, same tape; only the framework differs);
  * the seed-to-seed floor: two runs of the *same* twin with different seeds (different start and tape);
  * torch seed s against MindSpore seed s' != s (for reference: as a floor pair, but across frameworks).

Verdict: the twins are equivalent at this budget when the mean twin-vs-twin KID is no larger than the largest
seed-to-seed KID. Beside it, for each seed both twins ran: how far apart their losses and final weights are.
Exit status 0 equivalent, 1 not shown, 2 bad options.

Rules: every run and every sample set is made by the twins' public commands, which this script launches
(``--jobs`` at a time, each with ``cores // jobs`` threads) and times; a job whose marker file records the same
command lines is reused, an interrupted run is continued with ``--resume``. Wall times include start-up and
(MindSpore) graph compilation, and the machine may be shared: each job records the load average around it.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ddpm_core.cli import int_list, positive_int, run_main
from ddpm_core.config import UnetConfig
from ddpm_core.errors import UserError
from ddpm_core.runtime.atomic import atomic_write_bytes
from ddpm_core.runtime.environment import child_env
from ddpm_core.training.digits import RECIPE, from_model_range, load_split
from ddpm_core.weights.files import save_weights
from parity.digit_scores import CONFIDENT, DigitClassifier, kid, set_scores
from parity.engine.initial import initial_weights

TWINS = ("torch", "ms")
SAMPLE_SEED_BASE = {"torch": 1000, "ms": 2000}
"""Sampling seed of twin t's run s: ``SAMPLE_SEED_BASE[t] + s``; no two sample sets share their noise."""
KID_SCALE = 1e3


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m parity.quality", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/quality", help="work folder: initial weights, runs, samples, report")
    p.add_argument("--seeds", type=positive_int, default=2, help="training seeds per twin (>= 2 for a floor)")
    p.add_argument("--ms-seeds", type=positive_int, default=None,
                   help="MindSpore's seeds, if fewer (0..M-1; default --seeds): the floor then comes from PyTorch alone")
    p.add_argument("--n", type=positive_int, default=300, help="samples per run")
    p.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddpm")
    p.add_argument("--sample-steps", type=positive_int, default=None, help="DDIM steps (DDPM takes all T)")
    p.add_argument("--jobs", type=positive_int, default=2, help="processes at a time")
    p.add_argument("--json", metavar="PATH", help="write every figure here")
    g = p.add_argument_group("training (default: ddpm_core.training.digits.RECIPE, the recipe of examples/digits.py)")
    for option, value in RECIPE.items():
        kind = int_list if option == "dim-mults" else float if option in ("lr", "min-lr") else positive_int
        g.add_argument(f"--{option}", type=kind, default=kind(value))
    return p


@dataclass
class Job:
    """One training run and its sample set."""

    twin: str
    seed: int
    train_cmd: list[str]
    sample_cmd: list[str]
    run_dir: Path
    samples: Path
    marker: Path
    train_s: float | None = None
    sample_s: float | None = None
    load: tuple[float, float] | None = None
    resumed: bool = False
    reused: bool = False

    @property
    def name(self) -> str:
        return f"{self.twin} seed {self.seed}"


def plan(args: argparse.Namespace, out: Path) -> list[Job]:
    """Write the initial weights of every seed and list the jobs (MindSpore's first: they take longest)."""
    cfg = UnetConfig(dim=args.dim, channels=1, dim_mults=args.dim_mults)
    options = [x for option in RECIPE for x in (f"--{option}", _text(getattr(args, option.replace("-", "_"))))]
    jobs = []
    seeds = {"ms": args.ms_seeds or args.seeds, "torch": args.seeds}
    for twin, seed in ((t, s) for t in ("ms", "torch") for s in range(seeds[t])):
        init = out / f"init_seed{seed}.safetensors"
        if not init.exists():
            save_weights(initial_weights(cfg, seed), init, "torch", cfg)
        name = f"{twin}_seed{seed}"
        run_dir, samples = out / "runs" / name, out / "samples" / f"{name}.npy"
        train = ["-m", f"ddpm_{twin}.train", "--data", "digits", "--out", str(run_dir), "--seed", str(seed),
                 "--init-weights", str(init), "--no-progress", *options]
        sample = ["-m", f"ddpm_{twin}.sample", "--weights", str(run_dir / "model.safetensors"), "--n", str(args.n),
                  "--seed", str(SAMPLE_SEED_BASE[twin] + seed), "--sampler", args.sampler, "--batch-size", "100",
                  "--out", str(out / "samples" / f"{name}.png"), "--npy", str(samples), "--scale", "4", "--no-progress"]
        if args.sample_steps:
            sample += ["--steps", str(args.sample_steps)]
        jobs.append(Job(twin, seed, train, sample, run_dir, samples, out / "samples" / f"{name}.job.json"))
    return jobs


def _text(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def run_job(job: Job, threads: int) -> Job:
    """Train (or continue, or reuse a finished run made by the same command) and sample (or reuse the same
    sample set); times both."""
    done = json.loads(job.marker.read_text()) if job.marker.exists() else {}
    trained = done.get("train_cmd") == job.train_cmd and (job.run_dir / "model.safetensors").exists()
    if trained and done.get("sample_cmd") == job.sample_cmd and job.samples.exists():
        job.train_s, job.sample_s, job.resumed = done["train_s"], done["sample_s"], done["resumed"]
        job.load, job.reused = tuple(done["load"]), True
        return job
    env = child_env(threads=threads, pythonpath=Path(__file__).resolve().parents[1], GLOG_v="3")
    loads = [os.getloadavg()[0], *done.get("load", [])] if trained else [os.getloadavg()[0]]
    if trained:
        job.train_s, job.resumed = done["train_s"], done["resumed"]
    else:
        train = job.train_cmd
        if (job.run_dir / "run.json").exists():  # an interrupted run: continue it (its settings are checked)
            train, job.resumed = ["-m", f"ddpm_{job.twin}.train", "--resume", str(job.run_dir), "--no-progress"], True
        job.train_s = _timed(train, env, job.name)
    job.sample_s = _timed(job.sample_cmd, env, job.name)
    job.load = (min(loads), max(*loads, os.getloadavg()[0]))
    atomic_write_bytes(job.marker, json.dumps({"train_cmd": job.train_cmd, "sample_cmd": job.sample_cmd,
                                               "train_s": job.train_s, "sample_s": job.sample_s,
                                               "resumed": job.resumed, "load": job.load}, indent=1).encode())
    return job


def _timed(cmd: list[str], env: dict[str, str], name: str) -> float:
    print(f"[{name}] $ python {' '.join(cmd)}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *cmd], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = ((done.stderr or done.stdout).strip().splitlines() or ["no output"])[-1]
        raise UserError(f"{name}: `python {' '.join(cmd[:2])}` exited with {done.returncode}: {last}")
    return time.perf_counter() - start


# ---------------------------------------------------------------- scoring
@dataclass(frozen=True)
class PairStats:
    kind: str
    values: tuple[float, ...]  # KID x KID_SCALE, one per pair

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else float("nan")

    @property
    def max(self) -> float:
        return float(np.max(self.values)) if self.values else float("nan")


def score(jobs: list[Job], classifier: DigitClassifier) -> dict[str, Any]:
    """Per-run classifier scores and KID to the held-out digits; the pairwise KIDs grouped by kind."""
    heldout = load_split("heldout")
    real = classifier.features(heldout.images)
    feats, runs = {}, {}
    for job in jobs:
        images = from_model_range(np.load(job.samples))
        feats[job.twin, job.seed] = classifier.features(images)
        runs[job.name] = (set_scores(classifier.probabilities(images)), kid(feats[job.twin, job.seed], real) * KID_SCALE)
    train = load_split("train")  # real vs real at the same sizes: the smallest KID to expect
    pick = np.random.default_rng(0).choice(train.labels.shape[0], size=min(len(heldout.labels), train.labels.shape[0]),
                                           replace=False)
    runs[f"real: {len(pick)} training"] = (set_scores(classifier.probabilities(train.images[pick])),
                                    kid(classifier.features(train.images[pick]), real) * KID_SCALE)
    seeds = {t: sorted(j.seed for j in jobs if j.twin == t) for t in TWINS}
    d = lambda a, b: kid(feats[a], feats[b]) * KID_SCALE  # noqa: E731
    pairs = [
        PairStats("twin vs twin (torch s vs ms s: same start and tape)",
                  tuple(d(("torch", s), ("ms", s)) for s in seeds["ms"] if s in seeds["torch"])),
        *(PairStats(f"floor: {t} vs {t} (seeds differ)", tuple(d((t, a), (t, b)) for a, b in itertools.combinations(seeds[t], 2)))
          for t in TWINS),
        PairStats("torch s vs ms s' (seeds differ)",
                  tuple(d(("torch", a), ("ms", b)) for a in seeds["torch"] for b in seeds["ms"] if a != b)),
    ]
    return {"runs": runs, "pairs": pairs}


def drift(jobs: list[Job], out: Path) -> list[dict[str, Any]]:
    """For each seed both twins trained: the largest per-step loss difference over the whole run (log.jsonl),
    the largest final weight difference, and how far training moved the weights from the shared start."""
    from ddpm_core.weights.files import load_weights

    runs = {(j.twin, j.seed): j.run_dir for j in jobs}
    found = []
    for seed in sorted(s for t, s in runs if t == "ms" and ("torch", s) in runs):
        logs = [[json.loads(x)["loss"] for x in (runs[t, seed] / "log.jsonl").read_text().splitlines()] for t in TWINS]
        w = [load_weights(runs[t, seed] / "model.safetensors", naming="torch").state for t in TWINS]
        init = load_weights(out / f"init_seed{seed}.safetensors", naming="torch").state
        found.append({"seed": seed, "steps": len(logs[0]),
                      "loss_max_abs_diff": max(abs(a - b) for a, b in zip(*logs)),
                      "weights_max_abs_diff": max(float(np.abs(w[0][k] - w[1][k]).max()) for k in init),
                      "weights_moved": max(float(np.abs(w[0][k] - init[k]).max()) for k in init)})
    return found


def verdict(pairs: list[PairStats]) -> tuple[bool, str]:
    twin, floor = pairs[0], PairStats("floor", pairs[1].values + pairs[2].values)
    if not floor.values:
        return False, "no floor: --seeds must be >= 2"
    ok = twin.mean <= floor.max
    return ok, (f"{'EQUIVALENT' if ok else 'NOT SHOWN'}: mean twin-vs-twin KID {twin.mean:.2f}e-3 "
                f"{'<=' if ok else '>'} largest seed-to-seed KID {floor.max:.2f}e-3 "
                f"({len(floor.values)} same-twin pair(s); floor mean {floor.mean:.2f}e-3)")


def table(args: argparse.Namespace, jobs: list[Job], scores: dict[str, Any], accuracy: float,
          drifts: list[dict[str, Any]]) -> str:
    lines = [f"parity.quality: scikit-learn digits 8x8, Unet(dim={args.dim}, dim_mults={tuple(args.dim_mults)}), "
             f"batch {args.batch_size}, lr {args.lr}, {args.epochs} epochs of the 1,497 training digits; "
             f"{args.n} samples per run ({args.sampler}); seeds: torch {args.seeds}, ms {args.ms_seeds or args.seeds}",
             f"classifier: MLP on the 1,497 training digits, {accuracy:.1%} correct on the 300 held-out; "
             f"KID x 1e3 on its hidden features; 'confident' = top probability >= {CONFIDENT}", ""]
    head = f"{'set':<22}{'train s':>9}{'sample s':>10}{'confidence':>12}{'confident':>11}{'classes':>9}{'class share':>14}{'KID to held-out':>17}"
    lines += [head, "-" * len(head)]
    times = {j.name: j for j in jobs}
    for name, (s, k) in scores["runs"].items():
        j = times.get(name)
        t = (f"{j.train_s:9.0f}{j.sample_s:10.0f}" if j else f"{'-':>9}{'-':>10}")
        lines.append(f"{name:<22}{t}{s.confidence:12.3f}{s.confident_share:11.1%}{s.classes_covered:>7}/10"
                     f"{s.smallest_class_share:7.1%}-{s.largest_class_share:.1%}{k:14.2f}")
    lines += ["", f"{'pairs (KID x 1e3)':<56}{'n':>3}{'mean':>8}{'max':>8}  values", "-" * 96]
    for p in (p for p in scores["pairs"] if p.values):
        lines.append(f"{p.kind:<56}{len(p.values):>3}{p.mean:8.2f}{p.max:8.2f}  {', '.join(f'{v:.2f}' for v in p.values)}")
    for d in drifts:
        lines.append(f"torch vs ms seed {d['seed']}, same start and tape: losses within {d['loss_max_abs_diff']:.1e} at every one "
                     f"of {d['steps']} steps; final weights within {d['weights_max_abs_diff']:.1e} (training moved them up to "
                     f"{d['weights_moved']:.2f})")
    lines += ["", verdict(scores["pairs"])[1]]
    loads = [j.load for j in jobs if j.load]
    if loads:
        lines.append(f"machine: {_cpu_model()}, {os.cpu_count()} cores; 1-min load average around the jobs "
                     f"{min(min(x) for x in loads):.1f}-{max(max(x) for x in loads):.1f}"
                     + ("; some runs were resumed (their train time is the last part only)" if any(j.resumed for j in jobs) else ""))
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main_args(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    if args.seeds < 2:
        raise UserError("--seeds must be >= 2: the floor is the distance between two seeds of one twin")
    if args.ms_seeds is not None and args.ms_seeds > args.seeds:
        raise UserError(f"--ms-seeds {args.ms_seeds} exceeds --seeds {args.seeds}: MindSpore's seeds are a subset of PyTorch's")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = plan(args, out)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        jobs = list(pool.map(lambda j: run_job(j, threads), jobs))
    classifier = DigitClassifier()
    scores = score(jobs, classifier)
    drifts = drift(jobs, out)
    report = table(args, jobs, scores, classifier.heldout_accuracy, drifts)
    print(report)
    atomic_write_bytes(out / "report.txt", (report + "\n").encode())
    ok, _ = verdict(scores["pairs"])
    if args.json:
        atomic_write_bytes(args.json, json.dumps({
            "settings": {k: _text(v) for k, v in vars(args).items()}, "classifier_heldout_accuracy": classifier.heldout_accuracy,
            "jobs": [{"name": j.name, "train_s": j.train_s, "sample_s": j.sample_s, "load": j.load, "resumed": j.resumed,
                      "reused": j.reused, "train_cmd": j.train_cmd, "sample_cmd": j.sample_cmd} for j in jobs],
            "runs": {n: {**asdict(s), "kid_to_heldout_x1e3": k} for n, (s, k) in scores["runs"].items()},
            "pairs": [{"kind": p.kind, "kid_x1e3": list(p.values)} for p in scores["pairs"]],
            "drift": drifts, "equivalent": ok, "cpu": _cpu_model()}, indent=1).encode())
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    return run_main(main_args, argv)


if __name__ == "__main__":
    raise SystemExit(main())
