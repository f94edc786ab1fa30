"""``python -m parity.bench``: training and sampling throughput of the tutorial's code as written and of both
twins' plain and fast paths, side by side, with compile times, peak memory and the share of the machine's peak.

    python -m parity.bench [--batch 16] [--train-steps 3] [--sample-steps 10] [--repeats 3] [--quiet-wait 60]
                           [--configs tutorial,ms_pynative,ms_compiled,torch_eager,torch_fast] [--isa avx2|both]
                           [--json PATH] [--markdown PATH] [--no-check] [--workers 1[,2]]

Rules:
  * Each configuration runs in its own worker process (``--worker NAME``, which imports one framework only),
    so peak RSS (``ru_maxrss``) is per configuration and no framework's threads meet another's. The workers
    live for the whole run and the parent hands out one measurement at a time, round-robin over the
    configurations in every repetition (the starting one rotates), so a change of machine load hits all alike.
  * Warm-up (the first training step and the first sampling loop: graph compilation on compiled paths) is
    timed and reported on its own, never mixed into a throughput.
  * Sampling throughput is images/s of the full T=200 DDPM loop. With ``--sample-steps k`` < T each loop is
    the same sampler over a T=k schedule (the same shapes, the same work per step; the tutorial's own
    ``p_sample_loop`` with its global ``timesteps`` set to k) and its time is scaled by T/k; the output says so.
  * The machine may be shared: before each measurement the parent waits (up to ``--quiet-wait`` s) until other
    processes use less than a quarter of a core, and it records, for every measurement, the CPU that processes
    other than the bench used meanwhile ("foreign" cores, from /proc/stat) and the 1-minute load average.
  * Data-parallel scaling (``--workers 1,2``): for each framework's fast path in ``--configs`` (torch_fast,
    ms_compiled), the twin's ``Trainer`` with N workers at a fixed per-worker batch (weak scaling), launched by
    torchrun / msrun for N > 1 and as a plain process for N = 1 (a launcher with one worker runs the same
    single-process step, plus start-up). Each worker of N gets cores // N intra-op threads; one worker is also
    timed with each of those thread counts, and the efficiency images/s(N) / (N x images/s(1)) is reported
    against both. Rank 0 times the steps between two barriers; start-up and warm-up are reported apart.
    Nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ddpm_core.atomic import atomic_write_bytes
from ddpm_core.config import TUTORIAL_UNET, UnetConfig

T = 200  # the tutorial's timesteps: every throughput is for this many sampling steps
MARK = "@@bench "  # a worker's replies start with this; MindSpore may print other lines
REPO = Path(__file__).resolve().parents[1]
CONFIGS: dict[str, str] = {
    "tutorial": "tutorial as written (MindSpore PyNative)",
    "tutorial_default_isa": "tutorial as written, oneDNN default ISA",
    "ms_pynative": "ddpm_ms PyNative",
    "ms_compiled": "ddpm_ms compiled (ms.jit)",
    "torch_eager": "ddpm_torch eager (NCHW)",
    "torch_fast": "ddpm_torch fast (channels-last)",
}
DEFAULT_CONFIGS = ("tutorial", "ms_pynative", "ms_compiled", "torch_eager", "torch_fast")
TARGETS = (  # (name, numerator, denominator, kind, threshold): the goals of issue #6
    ("ms compiled training vs the tutorial as written", "ms_compiled", "tutorial", "train", 3.0),
    ("ms compiled sampling vs ms PyNative", "ms_compiled", "ms_pynative", "sample", 5.0),
    ("ms training throughput vs torch's best", "ms_compiled", "torch_fast", "train", 0.5),
    ("torch best path vs torch eager (training)", "torch_fast", "torch_eager", "train", 1.3),
)
TORCH_TRAIN_IMAGES_TARGET = 75.0
CHECK_WALL_TARGET_S = 60.0


# ----------------------------------------------------------------------------------------- workers
def _inputs(batch: int, cfg: UnetConfig, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    shape = (batch, cfg.channels, size, size)
    return (rng.uniform(-1, 1, shape).astype(np.float32), rng.integers(0, T, batch).astype(np.int32),
            rng.standard_normal(shape).astype(np.float32))


def _lrs() -> list[float]:
    from ddpm_core.schedules import cosine_decay_lr

    return cosine_decay_lr(1e-7, 1e-4, 10 * 3750, 3750, 10)  # the tutorial's learning-rate list


def _tutorial(name: str, cfg: UnetConfig, batch: int, size: int) -> tuple[Callable, Callable]:
    """The tutorial's model (rename loop included), ``nn.Adam`` over its lr list, ``train_step`` and
    ``p_sample_loop``, exactly as written."""
    import mindspore as ms
    from mindspore import nn

    if not (REPO / "tests" / "tutorial" / "tutorial_code.py").is_file():
        raise RuntimeError("tests/tutorial/tutorial_code.py not found: the tutorial baseline needs a source checkout")
    sys.path.insert(0, str(REPO))
    from tests.tutorial import tutorial_code as tut

    ms.set_seed(0)
    unet_model = tut.Unet(dim=cfg.dim, channels=cfg.channels, dim_mults=cfg.dim_mults)
    name_list = [name for name, _ in unet_model.parameters_and_names()]
    for name, item in zip(name_list, unet_model.trainable_params()):
        item.name = name
    optimizer = nn.Adam(unet_model.trainable_params(), learning_rate=_lrs())

    def forward_fn(data, t, noise=None):
        return tut.p_losses(unet_model, data, t, noise)

    grad_fn = ms.value_and_grad(forward_fn, None, optimizer.parameters, has_aux=False)

    def train_step(data, t, noise):
        loss, grads = grad_fn(data, t, noise)
        optimizer(grads)
        return loss

    x, t, noise = (ms.Tensor(a) for a in _inputs(batch, cfg, size))

    def train(n: int) -> None:
        for _ in range(n):
            unet_model.set_train()
            loss = train_step(x, t, noise)
        loss.asnumpy()

    def sample(steps: int) -> None:
        unet_model.set_train(False)
        tut.timesteps = steps
        tut.p_sample_loop(unet_model, (batch, cfg.channels, size, size))

    return train, sample


def _twin(name: str, cfg: UnetConfig, batch: int, size: int) -> tuple[Callable, Callable]:
    """A twin's ``make_train_step`` (``fast`` for ms_compiled / torch_fast) and ``p_sample_loop`` (``compiled``)."""
    from ddpm_core.config import DiffusionConfig

    fast = name in ("ms_compiled", "torch_fast")
    if name.startswith("ms_"):
        import mindspore as ms

        import ddpm_ms as twin
        from ddpm_ms import optim

        ms.set_seed(0)
    else:
        import torch

        import ddpm_torch as twin
        from ddpm_torch import optim

        torch.manual_seed(0)
    model = twin.Unet.from_config(cfg)
    fast_path = {"channels_last": fast} if name.startswith("torch") else {"compiled": fast}
    step = optim.make_train_step(model, twin.GaussianDiffusion(), optim.make_optimizer(model, _lrs()), **fast_path)
    x, t, noise = _inputs(batch, cfg, size)
    diffusion = functools.cache(lambda steps: twin.GaussianDiffusion(DiffusionConfig(timesteps=steps)))  # graph cache

    def train(n: int) -> None:
        for _ in range(n):
            loss = step(x, t, noise)
        float(loss)  # MindSpore may run ahead of Python: wait for the last step

    def sample(steps: int) -> None:
        model.set_train(False) if name.startswith("ms_") else model.eval()
        diffusion(steps).p_sample_loop(model, (batch, cfg.channels, size, size), compiled=fast)

    return train, sample


def _machine(cfg: UnetConfig, batch: int, size: int) -> dict[str, Any]:
    """FLOPs per image and the machine's float32 peak (the best of twenty 2048^3 matmuls, every core).

    The forward is counted with torch.utils.flop_counter on the torch twin (convolutions and matrix products);
    a training step is taken as 3 x forward (the backward's input and weight gradients each cost a forward):
    FlopCounterMode's own count for the backward of a grouped convolution is wrong in torch 2.14 (it counts
    a depthwise 7x7 backward as ~29 forwards)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import ddpm_torch

    x, t, _ = (torch.from_numpy(a) for a in _inputs(batch, cfg, size))
    with FlopCounterMode(display=False) as fwd, torch.no_grad():
        ddpm_torch.Unet.from_config(cfg)(x, t)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    best = float("inf")
    for _ in range(20):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    forward = fwd.get_total_flops() / batch
    return {"flops_per_image_forward": forward, "flops_per_image_train_step": 3 * forward,
            "peak_flops_measured": 2 * 2048**3 / best, "torch_threads": torch.get_num_threads()}


def worker(name: str, cfg: UnetConfig, batch: int, size: int) -> int:
    """Serve one configuration: build, then answer ``train N`` / ``sample K`` / ``exit`` lines on stdin."""
    import resource

    def reply(**kw: Any) -> None:
        print(MARK + json.dumps(kw), flush=True)

    t0 = time.perf_counter()
    if name == "machine":
        reply(**_machine(cfg, batch, size))
        return 0
    train, sample = (_tutorial if name.startswith("tutorial") else _twin)(name, cfg, batch, size)
    reply(ready=time.perf_counter() - t0, isa=os.environ.get("ONEDNN_MAX_CPU_ISA"))
    for line in sys.stdin:
        cmd, *arg = line.split()
        if cmd == "exit":
            r = resource.getrusage(resource.RUSAGE_SELF)
            reply(peak_rss_mib=r.ru_maxrss / 1024, cpu_s=r.ru_utime + r.ru_stime)
            return 0
        t0 = time.perf_counter()
        (train if cmd == "train" else sample)(int(arg[0]))
        reply(seconds=time.perf_counter() - t0)
    return 1


# ----------------------------------------------------------------------------------------- the parent
def _cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads; with ``children``, also its finished
    children's) from /proc; 0.0 where there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:15 if children else 13]) / os.sysconf("SC_CLK_TCK")


class Foreign:
    """CPU used by every process on the machine except ours (the parent and ``pids``), in cores, over a window."""

    def __init__(self, pids: Sequence[int]):
        self.pids = list(pids)
        self.start = self._now()

    def _now(self) -> tuple[float, float, float]:
        busy = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        busy_s = (sum(busy) - busy[3] - busy[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
        ours = _cpu_seconds(os.getpid(), children=True) + sum(_cpu_seconds(p) for p in self.pids)
        return time.perf_counter(), busy_s, ours

    def cores(self) -> float:
        (t0, b0, o0), (t1, b1, o1) = self.start, self._now()
        return max(0.0, (b1 - b0) - (o1 - o0)) / max(t1 - t0, 1e-9)


def wait_quiet(pids: Sequence[int], max_wait: float, threshold: float = 0.25) -> float:
    """Wait until other processes use < ``threshold`` cores over one second, or ``max_wait`` s have passed;
    returns the last reading."""
    deadline = time.perf_counter() + max_wait
    while True:
        window = Foreign(pids)
        time.sleep(1.0)
        cores = window.cores()
        if cores < threshold or time.perf_counter() >= deadline:
            return cores


class Worker:
    """One configuration's process: ``--worker NAME`` with its own environment, one command at a time."""

    def __init__(self, name: str, args: argparse.Namespace, log_dir: Path):
        env = dict(os.environ, GLOG_v="3", PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        env["ONEDNN_MAX_CPU_ISA"] = "AVX2"  # what ddpm_ms/__init__ sets; the tutorial itself sets nothing
        if name == "tutorial_default_isa":
            env.pop("ONEDNN_MAX_CPU_ISA")
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


def _stats(values: Sequence[float]) -> dict[str, float]:
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
            idle = {n: _cpu_seconds(w.proc.pid) for n, w in workers.items() if n != name}
            load0, window = os.getloadavg()[0], Foreign(pids)
            seconds = workers[name].ask(command)["seconds"]
            r = results[name]
            r["foreign_cores"].append(window.cores())
            r["load"] += [load0, os.getloadavg()[0]]
            for n, c in idle.items():  # a framework whose threads spin while idle would show here
                results[n]["idle_cpu_s"] += _cpu_seconds(workers[n].proc.pid) - c
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
        r["train_images_per_s"] = _stats([b * args.train_steps / s for s in r["train_s"]])
        r["sample_images_per_s"] = _stats([b / (s * T / k) for s in r["sample_s"]])
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
    tf = results.get("torch_fast", {}).get("train_images_per_s", {}).get("median")
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
    if not (REPO / "parity" / "check.py").is_file():
        return {"wall_s": None, "note": "not available"}
    wait_quiet([], quiet_wait)
    load0, window, t0 = os.getloadavg()[0], Foreign([]), time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "parity.check", "--no-progress"], cwd=REPO, capture_output=True,
                          text=True)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "exit_code": proc.returncode, "load_1min": [load0, os.getloadavg()[0]],
            "foreign_cores": window.cores(), "output_tail": (proc.stdout + proc.stderr)[-2000:] if proc.returncode else ""}


# ------------------------------------------------------------------------------- data-parallel scaling
DP_CONFIGS: dict[str, str] = {"torch": "torch_fast", "ms": "ms_compiled"}
"""Framework -> the fast-path configuration its data-parallel jobs run (``Trainer``'s defaults are those paths:
channels-last eager in torch, the one-graph ``ms.jit`` step in MindSpore)."""
DP_WARMUP_STEPS = 2  # the first step compiles (MindSpore) or builds DDP's buckets (torch); the second settles
DP_JOB_TIMEOUT_S = 1800.0
PARENT_ENV, LAUNCH_ENV = "PARITY_BENCH_PARENT", "PARITY_BENCH_LAUNCHED_AT"


def _tree(root: int) -> list[int]:
    """``root`` and every live process descended from it (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _set_threads(framework: str, threads: int) -> int:
    """Give this process ``threads`` intra-op threads (torch: ``set_num_threads``; MindSpore: its CPU kernel
    thread pool, ``device_context.cpu.op_tuning.threads_num``); returns the count the framework reports or was
    given. ``OMP_NUM_THREADS`` is set by the parent before the process starts."""
    if framework == "torch":
        import torch

        torch.set_num_threads(threads)
        return torch.get_num_threads()
    import mindspore as ms

    ms.device_context.cpu.op_tuning.threads_num(threads)
    return threads


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
        cores = window.cores()
        if _rank0_says(framework, distributed, world, cores < threshold or time.perf_counter() >= deadline):
            return cores


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
    reported_threads = _set_threads(framework, threads)
    trainer = importlib.import_module(f"ddpm_{framework}.train").Trainer(cfg, TUTORIAL_DIFFUSION, _lrs(), world=world)
    x, t, noise = _inputs(batch, cfg, size)
    startup = time.time() - float(os.environ[LAUNCH_ENV])
    warmup = []
    for _ in range(DP_WARMUP_STEPS):
        t0 = time.perf_counter()
        trainer.step(x, t, noise)  # returns the global mean loss: every rank has finished the step
        warmup.append(time.perf_counter() - t0)
    ours = [p for p in _tree(int(os.environ[PARENT_ENV])) if p != os.getpid()] if world.is_main else []
    train_s, foreign, load, quiet, busy = [], [], [], [], []
    for _ in range(repeats):
        quiet.append(_wait_quiet_together(framework, distributed, world, ours, quiet_wait))
        distributed.barrier(world)
        load0, window, cpu0, t0 = os.getloadavg()[0], Foreign(ours), _cpu_seconds(os.getpid()), time.perf_counter()
        for _ in range(steps):
            trainer.step(x, t, noise)
        distributed.barrier(world)
        train_s.append(time.perf_counter() - t0)
        busy.append((_cpu_seconds(os.getpid()) - cpu0) / train_s[-1])
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


def dp_plan(workers: Sequence[int], cores: int) -> list[tuple[int, int]]:
    """The (workers, intra-op threads per worker) jobs to time: each N with ``cores // N`` threads (at least 1), so
    N workers do not oversubscribe the cores, and 1 worker also with each of those thread counts, so every N
    has a 1-worker baseline with the same threads per worker as well as the all-cores one."""
    threads = {n: max(1, cores // n) for n in sorted(set(workers))}
    return sorted({(1, k) for k in threads.values()} | set(threads.items()), key=lambda j: (j[0], -j[1]))


def _dp_job(framework: str, workers: int, threads: int, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """Launch one timing job (torchrun / msrun for N > 1, a plain process for N = 1) and return rank 0's figures
    with the job's wall time and the CPU other processes used over the whole job."""
    from ddpm_core.distributed import free_port, msrun_command, torchrun_command

    tag = f"dp_{framework}_{workers}x{threads}"
    out, log = log_dir / f"{tag}.json", log_dir / f"{tag}.log"
    worker_args = ["--dp-worker", framework, "--dp-out", str(out), "--threads", str(threads), "--batch", str(args.batch),
                   "--train-steps", str(args.train_steps), "--repeats", str(args.repeats), "--image-size",
                   str(args.image_size), "--model-config", args.model_config.to_json(), "--quiet-wait",
                   str(args.quiet_wait)]
    if workers == 1:
        command = [sys.executable, "-m", "parity.bench", *worker_args]
    elif framework == "torch":
        command = torchrun_command(workers, "parity.bench", worker_args, free_port(), python=sys.executable)
    else:
        command = msrun_command(workers, "parity.bench", worker_args, free_port(), str(log_dir / tag),
                                python=sys.executable)
    env = dict(os.environ, GLOG_v="3", ONEDNN_MAX_CPU_ISA="AVX2", OMP_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),  # msrun runs "python"
               DDPM_DIST_TIMEOUT=str(300 + args.quiet_wait), **{PARENT_ENV: str(os.getpid())})
    wait_quiet([], args.quiet_wait)
    env[LAUNCH_ENV] = repr(time.time())
    load0, window, t0 = os.getloadavg()[0], Foreign([]), time.perf_counter()
    with open(log, "wb") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                start_new_session=True)
        try:
            status = proc.wait(timeout=DP_JOB_TIMEOUT_S + args.repeats * args.quiet_wait)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # the launcher's whole session: it and the workers it started
            status = proc.wait()
    wall = time.perf_counter() - t0
    if status != 0 or not out.is_file():
        logs = [log, *sorted((log_dir / tag).glob("*.log"))]
        tails = [f.read_text(errors="replace")[-2000:] for f in logs if f.is_file()]
        raise RuntimeError(f"data-parallel job {tag} exited with status {status}:\n" + "\n".join(tails))
    result = json.loads(out.read_text())
    result.update(launcher=result["launcher"] if workers > 1 else "none (plain process)", job_wall_s=wall,
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
        ips = _stats([n * batch * steps / s for s in j["train_s"]])
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
    cores = os.cpu_count() or 1
    base = {"workers": args.workers, "cores": cores, "per_worker_batch": args.batch, "warmup_steps": DP_WARMUP_STEPS,
            "jobs": []}
    if args.workers == [1] or not frameworks:
        why = "one worker only (--workers 1)" if frameworks else "neither torch_fast nor ms_compiled is in --configs"
        return {**base, "note": f"not measured: {why}"}
    jobs = [_dp_job(fw, n, k, args, log_dir) for fw in frameworks for n, k in dp_plan(args.workers, cores)]
    return {**base, "jobs": summarise_scaling(jobs, args.batch, args.train_steps, cores),
            "note": (f"weak scaling, {args.batch} images per worker per step; N > 1 launched by torchrun / msrun, "
                     f"N = 1 as a plain process; each worker of N gets {cores} // N intra-op threads (OMP_NUM_THREADS "
                     f"and the framework's own setting)")}


def _cpu() -> dict[str, Any]:
    info: dict[str, Any] = {"cpu_model": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    if Path("/proc/cpuinfo").is_file():
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        info["cpu_model"] = names[0] if names else info["cpu_model"]
    return info


def _fmt(s: dict[str, float], digits: int = 1) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def _opt(v: float | None, form: str) -> str:
    return "—" if v is None else form.format(v)


def markdown(report: dict[str, Any]) -> str:
    a, m, res, c = report["settings"], report["machine"], report["results"], report["parity_check"]
    loads = [v for r in res.values() for v in r["load"]]
    foreign = max(r["foreign_cores_max"] for r in res.values())
    cfg = UnetConfig.from_dict(a["model_config"])
    lines = [
        f"Measured {report['date']} on {m['cpu_model']} ({m['cores']} cores), torch {m['torch']}, MindSpore "
        f"{m['mindspore']}: batch {a['batch']}, {a['image_size']}×{a['image_size']}, Unet(dim={cfg.dim}, "
        f"channels={cfg.channels}, dim_mults={cfg.dim_mults}), T={T}. Median (min–max) of {a['repeats']} repeats, "
        f"warm-up excluded. 1-minute load average {min(loads):.2f}–{max(loads):.2f} (the bench included); other "
        f"processes used at most {foreign:.2f} cores during any measurement.", "",
        "| configuration | oneDNN ISA | train images/s | × tutorial | sample images/s (T=200) | × tutorial "
        "| warm-up (s): 1st train step / 1st sampling | peak RSS (MiB) | of peak FLOP/s: train / sample |",
        "|---|---|---|---|---|---|---|---|---|"]
    for r in res.values():
        lines.append(
            f"| {r['label']} | {r['isa'] or 'default'} | {_fmt(r['train_images_per_s'])} "
            f"| {_opt(r['train_vs_tutorial'], '{:.2f}×')} | {_fmt(r['sample_images_per_s'], 3)} "
            f"| {_opt(r['sample_vs_tutorial'], '{:.2f}×')} | {r['warmup_train_s']:.1f} / {r['warmup_sample_s']:.1f} "
            f"| {r['peak_rss_mib']:.0f} | {_opt(r['train_fraction_of_peak'], '{:.1%}')} / "
            f"{_opt(r['sample_fraction_of_peak'], '{:.1%}')} |")
    k = a["sample_steps"]
    if k < T:
        lines += ["", f"Sampling was timed over {k} of the {T} steps (a T={k} schedule: the same work per step) and "
                      f"scaled by {T}/{k}."]
    lines += ["", f"FLOPs per image: forward {m['flops_per_image_forward'] / 1e9:.3f} G (torch.utils.flop_counter on "
                  f"ddpm_torch: convolutions and matrix products), training step 3 × forward = "
                  f"{m['flops_per_image_train_step'] / 1e9:.3f} G, {T}-step sampling "
                  f"{m['flops_per_image_forward'] * T / 1e9:.1f} G. Peak: {m['peak_flops_measured'] / 1e9:.0f} GFLOP/s, "
                  f"measured (float32 2048² matmul in torch, {m['torch_threads']} threads).",
              "", "`python -m parity.check` (default, imports included): " + (
                  f"{c['wall_s']:.1f} s wall, exit code {c['exit_code']}, other processes {c['foreign_cores']:.2f} cores."
                  if c["wall_s"] is not None else c["note"] + "."),
              "", "| target | measured | goal | met |", "|---|---|---|---|"]
    for t in report["targets"]:
        met = "—" if t["met"] is None else ("yes" if t["met"] else "no")
        lines.append(f"| {t['target']} | {_opt(t['value'], '{:.2f}')} | {t['threshold']:g} {t['unit']} | {met} |")
    return "\n".join(lines + ["", *dp_markdown(report["data_parallel"])]) + "\n"


def dp_markdown(dp: dict[str, Any]) -> list[str]:
    """The data-parallel scaling table (or the line saying why there is none)."""
    if not dp["jobs"]:
        return [f"Data-parallel scaling: {dp['note']}."]
    lines = [f"Data-parallel scaling ({dp['note']}; efficiency = images/s(N) / (N × images/s(1)), against 1 worker "
             f"with the same threads per worker and against 1 worker on all {dp['cores']} cores; start-up = launch to "
             f"rank 0's trainer built; warm-up = the first {dp['warmup_steps']} steps, excluded):", "",
             "| configuration | workers × threads | launcher | train images/s (all workers) | per worker "
             "| efficiency: same threads / all cores | start-up / warm-up (s) | load (1 min) | other processes (cores, max) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for j in dp["jobs"]:
        lines.append(
            f"| {CONFIGS[j['config']]} | {j['workers']} × {j['threads']} | {j['launcher']} | {_fmt(j['images_per_s'])} "
            f"| {j['images_per_s_per_worker']:.1f} | {_opt(j['efficiency_same_threads'], '{:.2f}')} / "
            f"{_opt(j['efficiency_vs_all_cores'], '{:.2f}')} | {j['startup_s']:.1f} / "
            f"{' + '.join(f'{w:.1f}' for w in j['warmup_step_s'])} | {j['load_1min']['min']:.2f}–{j['load_1min']['max']:.2f} "
            f"| {j['foreign_cores_max']:.2f} |")
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m parity.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=16, help="images per batch (default 16)")
    p.add_argument("--train-steps", type=int, default=3, help="training steps per measurement (default 3)")
    p.add_argument("--sample-steps", type=int, default=10,
                   help=f"sampling steps per measurement, scaled to T={T} (default 10; {T} for the full loop)")
    p.add_argument("--repeats", type=int, default=3, help="measurements per configuration (default 3)")
    p.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help=f"comma-separated subset of {','.join(CONFIGS)}")
    p.add_argument("--isa", choices=("avx2", "both"), default="avx2",
                   help="both: also the tutorial under oneDNN's default instruction set (slow: 10-20 s per step)")
    p.add_argument("--quiet-wait", type=float, default=60.0,
                   help="seconds to wait, before each measurement, for other processes to go quiet (default 60; 0: never)")
    p.add_argument("--workers", default="1",
                   help="data-parallel worker counts to time, e.g. 1,2 (weak scaling of torch_fast and ms_compiled; "
                        "default 1: none)")
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--model-config", default=TUTORIAL_UNET.to_json(), help="UnetConfig fields as JSON (default: the tutorial's)")
    p.add_argument("--no-check", action="store_true", help="do not time python -m parity.check")
    p.add_argument("--json", default=None, help="write every figure here (atomically)")
    p.add_argument("--markdown", default=None, help="write the Markdown table here (atomically)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--dp-worker", choices=tuple(DP_CONFIGS), default=None, help=argparse.SUPPRESS)
    p.add_argument("--dp-out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    return p


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    try:
        args.model_config = UnetConfig.from_dict(json.loads(args.model_config))
        args.workers = sorted({int(v) for v in args.workers.split(",")})
    except (ValueError, TypeError) as e:
        p.error(str(e))
    if args.workers[0] < 1 or 1 not in args.workers:
        p.error("--workers: positive counts including 1 (the baseline of the scaling efficiency), e.g. 1,2")
    args.configs = [c for c in args.configs.split(",") if c]
    if args.isa == "both" and "tutorial_default_isa" not in args.configs:
        args.configs.append("tutorial_default_isa")
    unknown = sorted(set(args.configs) - set(CONFIGS))
    if unknown or not args.configs:
        p.error(f"--configs: unknown {', '.join(unknown)}; choose from {', '.join(CONFIGS)}" if unknown else "--configs is empty")
    if min(args.batch, args.train_steps, args.repeats) < 1 or not 2 <= args.sample_steps <= T:
        p.error(f"--batch, --train-steps and --repeats must be >= 1 and --sample-steps in [2, {T}]")
    if args.image_size % args.model_config.size_multiple:
        p.error(f"--image-size must be a multiple of {args.model_config.size_multiple} for this U-Net")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.dp_worker:
        return dp_worker(args.dp_worker, args.model_config, args.batch, args.train_steps, args.repeats,
                         args.image_size, args.threads, args.quiet_wait, args.dp_out)
    if args.worker:
        return worker(args.worker, args.model_config, args.batch, args.image_size)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="parity-bench-") as tmp:
        from importlib.metadata import version

        machine = {**_cpu(), "torch": version("torch"), "mindspore": version("mindspore")}
        wait_quiet([], args.quiet_wait)
        probe = Worker("machine", args, Path(tmp))
        machine.update(probe.read())
        probe.proc.wait()
        results = summarise(measure(args, Path(tmp)), args, machine)
        scaling = data_parallel_scaling(args, Path(tmp))
    check = run_check(not args.no_check, args.quiet_wait)
    settings = {k: v for k, v in vars(args).items() if k not in ("worker", "dp_worker", "dp_out", "threads", "json",
                                                                 "markdown")}
    settings["model_config"] = args.model_config.to_dict()
    report = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "settings": settings,
              "machine": machine, "environment": {"python": sys.version.split()[0], "platform": platform.platform(),
                                                  "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
              "results": results, "parity_check": check, "targets": targets(results, check),
              "data_parallel": scaling}
    text = markdown(report)
    print(text, end="")
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(report, indent=2) + "\n").encode())
    if args.markdown:
        atomic_write_bytes(args.markdown, text.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
