"""Data-parallel scaling (``--workers 1,2``): weak scaling of each framework's fast training path, the
twin's ``Trainer`` with N workers at a fixed per-worker batch, launched through ``ddpm_core.runtime.launch``
(torchrun / msrun for N > 1, a plain process for N = 1: a launcher with one worker runs the same
single-process step, plus start-up).

Rules: each worker of N gets cores // N intra-op threads; one worker is also timed with each of those
thread counts, and the efficiency images/s(N) / (N x images/s(1)) is reported against both. Rank 0 times
the steps between two barriers; start-up and warm-up are reported apart. Nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ddpm_core.config import UnetConfig
from ddpm_core.runtime import launch
from ddpm_core.runtime.atomic import atomic_write_bytes
from ddpm_core.runtime.environment import ISA, child_env, use_threads
from parity.bench.load import Foreign, cpu_seconds, process_tree, wait_quiet
from parity.bench.orchestrate import stats
from parity.bench.workloads import REPO, inputs, lrs

DP_CONFIGS: dict[str, str] = {"torch": "torch_channels_last", "ms": "ms_compiled"}
"""Framework -> the fast-path configuration its data-parallel jobs run (``Trainer``'s defaults are those paths:
channels-last eager in torch, the one-graph ``ms.jit`` step in MindSpore)."""
DP_WARMUP_STEPS = 2  # the first step compiles (MindSpore) or builds DDP's buckets (torch); the second settles
DP_JOB_TIMEOUT_S = 1800.0
PARENT_ENV, LAUNCH_ENV = "PARITY_BENCH_PARENT", "PARITY_BENCH_LAUNCHED_AT"


def _rank0_says(framework: str, distributed: Any, world: Any, flag: bool) -> bool:
    """Rank 0's ``flag``, on every rank (one all-reduce of a number; ``flag`` itself outside a job)."""
    if not world.distributed:
        return flag
    value = np.array([float(flag and world.is_main)], np.float32)
    if framework == "torch":
        import torch

        return float(distributed.mean(torch.from_numpy(value), world)) > 0
    import mindspore as ms

    return float(distributed.mean(ms.Tensor(value), world).asnumpy()[0]) > 0


def _wait_quiet_together(framework: str, distributed: Any, world: Any, ours: Sequence[int], max_wait: float,
                         threshold: float = 0.25) -> float:
    """``wait_quiet`` in a job: rank 0 reads the machine over each second while the others sleep, and all learn
    its verdict every second, so no rank sits in a collective for long (MindSpore's CPU all-reduce gives up on
    a peer that is silent for tens of seconds: measured). Returns rank 0's last reading."""
    deadline = time.perf_counter() + max_wait
    while True:
        window = Foreign(ours)
        time.sleep(1.0)
        cores_used = window.cores()
        if _rank0_says(framework, distributed, world, cores_used < threshold or time.perf_counter() >= deadline):
            return cores_used


def dp_worker(framework: str, cfg: UnetConfig, batch: int, steps: int, repeats: int, size: int, threads: int,
              quiet_wait: float, out: str) -> int:
    """One rank of a data-parallel timing job (or the whole job, unlaunched): ``DP_WARMUP_STEPS`` warm-up steps,
    then ``repeats`` x ``steps`` steps of the twin's ``Trainer`` on a per-rank batch of ``batch``. Rank 0 waits
    for a quiet machine before each repetition, times it between two barriers and writes every figure to
    ``out`` (atomically), with the CPU rank 0 used meanwhile (``rank0_cores``: its threads at work). Under
    msrun the scheduler process runs this too and exits inside ``init``."""
    import importlib
    import resource

    from ddpm_core.config import TUTORIAL_DIFFUSION

    distributed = importlib.import_module(f"ddpm_{framework}.distributed")
    world = distributed.init()  # first: msrun's scheduler serves here and never returns
    reported_threads = use_threads(framework, threads)
    trainer = importlib.import_module(f"ddpm_{framework}.train").Trainer(cfg, TUTORIAL_DIFFUSION, lrs(), world=world)
    x, t, noise = inputs(batch, cfg, size)
    startup = time.time() - float(os.environ[LAUNCH_ENV])
    warmup = []
    for _ in range(DP_WARMUP_STEPS):
        t0 = time.perf_counter()
        trainer.step(x, t, noise)  # returns the global mean loss: every rank has finished the step
        warmup.append(time.perf_counter() - t0)
    ours = [p for p in process_tree(int(os.environ[PARENT_ENV])) if p != os.getpid()] if world.is_main else []
    train_s, foreign, load, quiet, busy = [], [], [], [], []
    for _ in range(repeats):
        quiet.append(_wait_quiet_together(framework, distributed, world, ours, quiet_wait))
        distributed.barrier(world)
        load0, window, cpu0, t0 = os.getloadavg()[0], Foreign(ours), cpu_seconds(os.getpid()), time.perf_counter()
        for _ in range(steps):
            trainer.step(x, t, noise)
        distributed.barrier(world)
        train_s.append(time.perf_counter() - t0)
        busy.append((cpu_seconds(os.getpid()) - cpu0) / train_s[-1])
        foreign.append(window.cores())
        load += [load0, os.getloadavg()[0]]
    if world.is_main:
        r = resource.getrusage(resource.RUSAGE_SELF)
        result = {"framework": framework, "workers": world.size, "launcher": world.launcher, "threads": threads,
                  "threads_reported": reported_threads, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                  "startup_s": startup, "warmup_step_s": warmup, "train_s": train_s, "rank0_cores": busy,
                  "foreign_cores": foreign,
                  "quiet_wait_cores": quiet, "load": load, "rank0_peak_rss_mib": r.ru_maxrss / 1024}
        atomic_write_bytes(out, (json.dumps(result) + "\n").encode())
    distributed.shutdown(world)
    return 0


def dp_plan(workers: Sequence[int], n_cores: int) -> list[tuple[int, int]]:
    """The (workers, intra-op threads per worker) jobs to time: each N with ``n_cores // N`` threads (at least
    1), so N workers do not oversubscribe the cores, and 1 worker also with each of those thread counts, so every
    N has a 1-worker baseline with the same threads per worker as well as the all-cores one."""
    threads = {n: max(1, n_cores // n) for n in sorted(set(workers))}
    return sorted({(1, k) for k in threads.values()} | set(threads.items()), key=lambda j: (j[0], -j[1]))


def _dp_job(framework: str, workers: int, threads: int, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """Launch one timing job and return rank 0's figures with the job's wall time and the CPU other processes
    used over the whole job."""
    tag = f"dp_{framework}_{workers}x{threads}"
    out, log = log_dir / f"{tag}.json", log_dir / f"{tag}.log"
    worker_args = ["--dp-worker", framework, "--dp-out", str(out), "--threads", str(threads), "--batch", str(args.batch),
                   "--train-steps", str(args.train_steps), "--repeats", str(args.repeats), "--image-size",
                   str(args.image_size), "--model-config", args.model_config.to_json(), "--quiet-wait",
                   str(args.quiet_wait)]
    job = launch.job_command(framework, workers, "parity.bench", worker_args, log_dir / tag)
    env = child_env(threads=threads, timeout_s=300 + args.quiet_wait, pythonpath=REPO, isa=ISA, GLOG_v="3",
                    **{PARENT_ENV: str(os.getpid())})
    wait_quiet([], args.quiet_wait)
    env[LAUNCH_ENV] = repr(time.time())
    load0, window = os.getloadavg()[0], Foreign([])
    finished = launch.run(job.argv, env, REPO, log, DP_JOB_TIMEOUT_S + args.repeats * args.quiet_wait)
    if not (finished.ok and out.is_file()):
        raise RuntimeError(launch.describe(f"data-parallel job {tag}", job, finished, log))
    result = json.loads(out.read_text())
    result.update(launcher=result["launcher"] if workers > 1 else "none (plain process)", job_wall_s=finished.wall_s,
                  job_foreign_cores=window.cores(), load=[load0, *result["load"], os.getloadavg()[0]])
    return result


def scaling_efficiency(throughput_n: float, workers: int, throughput_1: float) -> float:
    """throughput(N) / (N x throughput(1)): 1.0 when N workers each train as fast as one alone (weak scaling)."""
    return throughput_n / (workers * throughput_1)


def summarise_scaling(jobs: Sequence[dict[str, Any]], batch: int, steps: int, cores: int) -> list[dict[str, Any]]:
    """Per job: global images/s (N x ``batch`` x ``steps`` per repetition; median, min, max) and, for every N, its
    efficiency against the 1-worker job with the same threads per worker and against the 1-worker job on all
    cores (``cores // 1`` threads); None where that baseline was not measured."""
    medians = {(j["framework"], j["workers"], j["threads"]): statistics.median(
        [j["workers"] * batch * steps / s for s in j["train_s"]]) for j in jobs}
    out = []
    for j in jobs:
        fw, n, k = j["framework"], j["workers"], j["threads"]
        ips = stats([n * batch * steps / s for s in j["train_s"]])
        same, full = medians.get((fw, 1, k)), medians.get((fw, 1, cores))
        out.append({**j, "config": DP_CONFIGS[fw], "images_per_s": ips,
                    "images_per_s_per_worker": ips["median"] / n,
                    "efficiency_same_threads": None if same is None else scaling_efficiency(ips["median"], n, same),
                    "efficiency_vs_all_cores": None if full is None else scaling_efficiency(ips["median"], n, full),
                    "load_1min": {"min": min(j["load"]), "max": max(j["load"])},
                    "foreign_cores_max": max(j["foreign_cores"])})
    return out


def data_parallel_scaling(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """Weak scaling of each framework's fast training path (``DP_CONFIGS``, those in ``--configs``) over
    ``--workers``: every job of ``dp_plan`` in turn, each with a fixed per-worker batch of ``--batch``."""
    frameworks = [fw for fw, config in DP_CONFIGS.items() if config in args.configs]
    n_cores = os.cpu_count() or 1
    base = {"workers": args.workers, "cores": n_cores, "per_worker_batch": args.batch,
            "warmup_steps": DP_WARMUP_STEPS, "jobs": []}
    if args.workers == [1] or not frameworks:
        why = ("one worker only (--workers 1)" if frameworks
               else "neither torch_channels_last nor ms_compiled is in --configs")
        return {**base, "note": f"not measured: {why}"}
    jobs = [_dp_job(fw, n, k, args, log_dir) for fw in frameworks for n, k in dp_plan(args.workers, n_cores)]
    return {**base, "jobs": summarise_scaling(jobs, args.batch, args.train_steps, n_cores),
            "note": (f"weak scaling, {args.batch} images per worker per step; N > 1 launched by torchrun / msrun, "
                     f"N = 1 as a plain process; each worker of N gets {n_cores} // N intra-op threads "
                     f"(OMP_NUM_THREADS and the framework's own setting)")}
