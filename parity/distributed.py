"""Training parity across processes: K training steps of each twin as one plain process and as N
data-parallel workers under the framework's own launcher (torchrun, msrun), compared as report rows.

    python -m parity.distributed --framework torch|ms --device DEV JOB.npz OUT.npz    (what a launcher runs)

Rules:
  * the entry calls the twin's ``distributed.init`` before anything else: msrun runs the same command in
    its scheduler process, which serves and exits inside ``init`` (it must read or write nothing);
  * every process reads the whole job (configs, PyTorch-named weights, the tape's training batches, the
    learning rates) and runs the twin's ``train_steps`` on its slice of each batch; rank 0 alone writes
    OUT (losses, final weights), atomically;
  * every process runs one op thread, so a plain process and a worker compute alike;
  * a launcher that fails, or runs past its timeout (its whole process group is killed), raises a
    ``LaunchError`` naming it, with the tail of its logs: never a hang.
In every comparison ``a`` is PyTorch (or the N-worker run) and ``b`` MindSpore (or the plain process).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ddpm_core.cli import exit_after_main
from ddpm_core.config import DiffusionConfig, UnetConfig
from ddpm_core.errors import EXIT_ENVIRONMENT, EXIT_USER_ERROR, EnvironmentRefused, UserError
from ddpm_core.runtime.atomic import atomic_write
from ddpm_core.runtime.distributed import World
from ddpm_core.runtime.environment import child_env
from ddpm_core.runtime.launch import LaunchError, describe, job_command, run
from parity.engine.compare import Comparison, Summary
from parity.engine.rows import Row, pairs_row
from parity.engine.suite import RunSpec
from parity.engine.tolerances import tolerance

ENTRY = "parity.distributed"
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TIMEOUT_S = 300.0
LABELS = {"torch": "PyTorch", "ms": "MindSpore"}
COMPILE = "auto"
"""``train_steps``' ``compile`` for both twins, as the adam check trains: PyTorch eager; MindSpore's training step
as one ``ms.jit`` graph (``make_train_step(compiled=True)``; tutorial U-Net, 3 steps: 18 s with the compile)."""


@dataclass(frozen=True)
class Job:
    """K training steps of one twin from ``weights`` (PyTorch names): step k trains on ``x_starts[k]``
    (K, B, C, H, W), ``ts[k]`` (K, B), ``noises[k]`` at learning rate ``lrs[k]``."""

    framework: str
    unet: UnetConfig
    diffusion: DiffusionConfig
    weights: Mapping[str, np.ndarray]
    x_starts: np.ndarray
    ts: np.ndarray
    noises: np.ndarray
    lrs: tuple[float, ...]
    compile: str = COMPILE
    device: str = "cpu"


@dataclass(frozen=True)
class Trained:
    """What rank 0 wrote: the global batch's loss per step and the final weights (PyTorch names)."""

    losses: np.ndarray
    weights: dict[str, np.ndarray]
    workers: int
    train_s: float


def _write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def write_job(job: Job, path: str | os.PathLike) -> None:
    """``job`` as one .npz (its settings as JSON under ``job``), written atomically."""
    meta = {"framework": job.framework, "unet": job.unet.to_dict(), "diffusion": vars(job.diffusion),
            "lrs": [float(v) for v in job.lrs], "compile": job.compile, "device": job.device}
    _write_npz(path, {"job": np.array(json.dumps(meta)), "x_starts": job.x_starts, "ts": job.ts,
                      "noises": job.noises, **{f"weights/{k}": v for k, v in job.weights.items()}})


def read_job(path: str | os.PathLike) -> Job:
    """The ``Job`` that ``write_job`` wrote."""
    with np.load(path) as f:
        meta = json.loads(str(f["job"]))
        return Job(meta["framework"], UnetConfig.from_dict(meta["unet"]), DiffusionConfig(**meta["diffusion"]),
                   {k[len("weights/"):]: f[k] for k in f.files if k.startswith("weights/")},
                   f["x_starts"], f["ts"], f["noises"], tuple(meta["lrs"]), meta["compile"], meta["device"])


def read_result(path: str | os.PathLike) -> Trained:
    """What rank 0 of a run wrote."""
    with np.load(path) as f:
        return Trained(f["losses"], {k[len("weights/"):]: f[k] for k in f.files if k.startswith("weights/")},
                       int(f["workers"]), float(f["train_s"]))


# ---------------------------------------------------------------- the entry every process runs
def main(argv: Sequence[str] | None = None) -> int:
    """One process of a run: join the job, train, rank 0 writes OUT. Errors: one line, exit 2."""
    p = argparse.ArgumentParser(prog=f"python -m {ENTRY}", description="K training steps of one twin (one rank).")
    p.add_argument("--framework", choices=tuple(LABELS), required=True)
    p.add_argument("--device", required=True)
    p.add_argument("job")
    p.add_argument("out")
    args = p.parse_args(argv)
    if args.framework == "torch":
        from ddpm_torch import device as devices
        from ddpm_torch import distributed as twin
    else:
        from ddpm_ms import device as devices
        from ddpm_ms import distributed as twin
    try:
        device = devices.resolve_device(args.device)  # under torchrun, cuda is this worker's own GPU
    except (UserError, EnvironmentRefused) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ENVIRONMENT if isinstance(e, EnvironmentRefused) else EXIT_USER_ERROR
    world = twin.init(device)  # msrun's scheduler process serves and exits in here
    try:
        from parity import env

        (env.setup_torch if args.framework == "torch" else env.setup_mindspore)(device, 1)
        job = read_job(args.job)
        if job.framework != args.framework:
            raise ValueError(f"{args.job} is a {job.framework} job, not {args.framework}")
        world.check_batch(job.x_starts.shape[1])
        start = time.perf_counter()
        losses, weights = train(job, world, device)
        if world.is_main:
            _write_npz(args.out, {"losses": np.asarray(losses, np.float64), "workers": np.array(world.size),
                                  "train_s": np.array(time.perf_counter() - start),
                                  **{f"weights/{k}": v for k, v in weights.items()}})
    except (ValueError, OSError, KeyError) as e:
        print(f"error: rank {world.rank}: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    finally:
        twin.shutdown(world)
    return 0


def train(job: Job, world: World, device: str) -> tuple[list[float], dict[str, np.ndarray]]:
    """The twin's ``train_steps`` on ``job`` as rank ``world.rank`` of ``world.size``, on ``device``."""
    if job.framework == "torch":
        from ddpm_torch.train import train_steps
    else:
        from ddpm_ms.train import train_steps
    return train_steps(job.unet, job.diffusion, dict(job.weights), job.x_starts, job.ts, job.noises, list(job.lrs),
                       compile=job.compile, world=world, device=device)


# ---------------------------------------------------------------- launching
def launch(job_path: Path, out_path: Path, framework: str, device: str, workers: int, log_dir: Path,
           timeout_s: float = DEFAULT_TIMEOUT_S, module: str = ENTRY) -> float:
    """Run ``module`` (the entry) on ``job_path`` as one plain process (``workers`` 1) or N workers under
    torchrun / msrun, one op thread each; return the wall seconds. ``LaunchError`` if it fails, writes no
    result or runs past ``timeout_s`` (its process group is killed)."""
    args = ["--framework", framework, "--device", device, str(job_path), str(out_path)]
    job = job_command(framework, workers, module, args, log_dir / "msrun")
    log = log_dir / f"{framework}-{workers}.log"
    env = child_env(threads=1, timeout_s=timeout_s, pythonpath=ROOT)  # a dead peer fails a collective, no hang
    finished = run(job.argv, env, ROOT, log, timeout_s)
    if finished.ok and out_path.is_file():
        return finished.wall_s
    raise LaunchError(describe(f"{LABELS[framework]} training", job, finished, log))


# ---------------------------------------------------------------- the check's rows
Runs = dict[tuple[str, int], Trained | str]
"""(framework, workers) -> what that run wrote, or why it has no result (a ``LaunchError``'s message)."""


def run_training(spec: RunSpec, weights: Mapping[str, np.ndarray], tape: Mapping[str, np.ndarray], workers: int,
                 devices: Mapping[str, str], timings: dict[str, float] | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, module: str = ENTRY,
                 progress: Callable[[str], None] | None = None) -> Runs:
    """Each framework in ``devices`` trained ``spec.tape.train_steps`` steps on the tape's training batches at
    ``spec.lrs``, as one plain process and as ``workers`` workers (launch and training seconds into ``timings``).
    ``ValueError`` before any launch if the batch does not split over ``workers``; a failed launch, or one whose
    processes did not form a job of ``workers``, is kept as its message (it becomes a failed row)."""
    World(0, workers).check_batch(spec.tape.batch)
    timings = {} if timings is None else timings
    runs: Runs = {}
    with tempfile.TemporaryDirectory(prefix="parity-distributed-") as tmp:
        folder = Path(tmp)
        for framework, device in devices.items():
            job_path = folder / f"{framework}-job.npz"
            write_job(Job(framework, spec.unet, spec.diffusion, weights, tape["train_x0"], tape["train_t"],
                          tape["train_noise"], tuple(spec.lrs), COMPILE, device), job_path)
            for n in (1, workers):
                if progress is not None:
                    progress(f"training parity: {LABELS[framework]}, {'1 process' if n == 1 else f'{n} workers'}")
                out = folder / f"{framework}-{n}.npz"
                try:
                    timings[f"train/{framework}/{n}"] = round(
                        launch(job_path, out, framework, device, n, folder, timeout_s, module), 3)
                except LaunchError as e:
                    runs[(framework, n)] = str(e)
                    continue
                trained = read_result(out)
                timings[f"train/{framework}/{n}/steps"] = round(trained.train_s, 3)
                runs[(framework, n)] = trained if trained.workers == n else (
                    f"{LABELS[framework]} training ran as {trained.workers} process(es), not {n} workers")
    return runs


def _outputs(run: Trained, w0: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``train/loss`` (K,) and ``train/update/NAME`` = w_K - w_0 (float64, exact)."""
    out = {"train/loss": np.asarray(run.losses, np.float64)}
    out.update({f"train/update/{n}": run.weights[n].astype(np.float64) - np.asarray(w0[n], np.float64)
                for n in w0 if n in run.weights})
    return out


def training_rows(runs: Runs, w0: Mapping[str, np.ndarray], steps: int, workers: int, device: str) -> list[Row]:
    """Per framework, N workers (a) against one process (b); then PyTorch (a) against MindSpore (b) at N
    workers. Each pair gives a losses row (``loss`` tolerance) and a parameter-change row (``adam``), or one
    failed row carrying the launcher's error."""
    pairs = [(f"{LABELS[f]}: {workers} workers vs 1 process", (f, workers), (f, 1)) for f in LABELS]
    pairs.append((f"{workers} workers: PyTorch vs MindSpore", ("torch", workers), ("ms", workers)))
    rows = []
    for what, key_a, key_b in pairs:
        if key_a not in runs or key_b not in runs:
            continue
        label = f"training {steps} steps, {what}"
        failed = [runs[k] for k in (key_a, key_b) if isinstance(runs[k], str)]
        if failed:
            problem = Comparison("run", tolerance("loss", "float32", device), problem=failed[0])
            rows.append(Row(label, "loss", Summary(label, [problem]), note="no result"))
            continue
        a, b = _outputs(runs[key_a], w0), _outputs(runs[key_b], w0)
        rows.append(pairs_row("train/loss", a, b, f"{label}: losses", device, "loss", note="loss of every step"))
        rows.append(pairs_row("train/update/", a, b, f"{label}: w_K - w_0", device, "adam",
                              note="parameter change after the last step"))
    return rows


if __name__ == "__main__":
    exit_after_main(main())
