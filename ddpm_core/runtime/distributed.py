"""Data-parallel training, framework-neutral: who this process is in the job, which part of each global
batch it computes, and the launcher command lines (docs/distributed.md).

Rules:
  * the launchers are the frameworks' own: ``torchrun`` (PyTorch, ``torch.distributed``) and ``msrun``
    (MindSpore, its data-parallel mode); a process learns its rank from the environment they set, and the
    twins' ``distributed.init`` modules join the job;
  * every rank computes the same global tape (``ddpm_core.training.tape``) and keeps its contiguous slice
    (``ddpm_core.training.tape.shard``): rank r of N takes examples [r * B/N, (r + 1) * B/N) of each global batch of B,
    with their flips, timesteps and noise, so N workers train on exactly what one process trains on;
  * each rank's loss is the mean over its slice and the gradients are averaged over the ranks, which is the
    gradient of the global mean (every slice has B/N examples); the logged loss is the ranks' mean;
  * rank 0 alone writes (settings, log, checkpoints, exports); every rank reads the same checkpoint to resume.
"""
from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_TIMEOUT_S = 300.0
TIMEOUT_ENV = "DDPM_DIST_TIMEOUT"
"""Seconds a rank waits in a collective for the others before it gives up (a dead peer must not hang the job)."""


@dataclass(frozen=True)
class World:
    """This process's place in a data-parallel job (``size`` 1: a plain single process)."""

    rank: int = 0
    size: int = 1
    launcher: str = "none"  # "torchrun", "msrun" or "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def check_batch(self, batch: int) -> int:
        """The per-rank batch; a ``ValueError`` naming both numbers unless ``batch`` splits evenly."""
        if batch % self.size:
            raise ValueError(f"the global batch size {batch} does not split evenly over {self.size} workers; "
                             f"pick a multiple of {self.size}")
        return batch // self.size


def launched_by() -> str:
    """"torchrun" or "msrun" when this process was started by one of them, else "none"."""
    if os.environ.get("TORCHELASTIC_RUN_ID") is not None or ("RANK" in os.environ and "WORLD_SIZE" in os.environ):
        return "torchrun"
    if os.environ.get("MS_ROLE") in ("MS_WORKER", "MS_SCHED") and "MS_WORKER_NUM" in os.environ:
        return "msrun"  # msrun runs the same command as its scheduler: ``init`` serves there and exits
    return "none"


def launched_size() -> int:
    """The number of workers the launcher started (``WORLD_SIZE`` / ``MS_WORKER_NUM``), known before joining: 1
    outside a launcher."""
    name = {"torchrun": "WORLD_SIZE", "msrun": "MS_WORKER_NUM"}.get(launched_by())
    try:
        return max(1, int(os.environ[name])) if name else 1
    except (KeyError, ValueError):
        return 1


def timeout_s() -> float:
    """The collective timeout (``DDPM_DIST_TIMEOUT`` seconds, default 300)."""
    value = os.environ.get(TIMEOUT_ENV)
    try:
        seconds = float(value) if value else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV}={value!r}: expected a number of seconds") from None
    if seconds <= 0:
        raise ValueError(f"{TIMEOUT_ENV}={value!r}: expected a positive number of seconds")
    return seconds


def free_port() -> int:
    """A TCP port that was free a moment ago (for a launcher's rendezvous on this host)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun_command(workers: int, module: str, args: Sequence[str], port: int, python: str = "python") -> list[str]:
    """``python -m torch.distributed.run --nproc_per_node N ... -m MODULE ARGS`` (what ``torchrun`` runs) on
    this host, with a fixed rendezvous port and no restarts: a failed worker stops the job."""
    return [python, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(workers),
            "--master_addr", "127.0.0.1", "--master_port", str(port), "--max_restarts", "0",
            "-m", module, *args]


def msrun_command(workers: int, module: str, args: Sequence[str], port: int, log_dir: str,
                  python: str = "python", cluster_timeout_s: int = 120) -> list[str]:
    """``msrun --worker_num N --local_worker_num N ... python -m MODULE ARGS`` on this host: msrun starts the
    scheduler and N workers, prints their output, and stops them all when one fails (``--join True``).

    msrun runs its task as ``python SCRIPT`` unless the task is literally ``python``/``python3``, so the
    workers' interpreter is the ``python`` on ``PATH`` (the caller puts its environment's first)."""
    return [python, "-m", "mindspore.parallel.cluster.run", "--worker_num", str(workers),
            "--local_worker_num", str(workers), "--master_addr", "127.0.0.1", "--master_port", str(port),
            "--log_dir", log_dir, "--join", "True", "--cluster_time_out", str(cluster_timeout_s),
            "python", "-m", module, *args]
