"""The process-environment policy, in one place: oneDNN's instruction set for MindSpore, the intra-op
thread default on a shared machine, and the environment a child process (worker, launcher) starts with.

Rules:
  * ``ONEDNN_MAX_CPU_ISA=AVX2`` is pinned (``pin_isa``) before MindSpore runs its first CPU kernel, unless
    the variable is already set: MindSpore 2.10's CPU convolutions are 25-60x slower under oneDNN's default
    instruction set on AVX-512/AMX processors (docs/performance.md). PyTorch is never pinned.
  * The PyTorch thread default (``default_threads``) is ``OMP_NUM_THREADS`` when it is set, else the cores
    nobody else is using: the cores this process may run on minus the 1-minute load average, at least 1. On a
    busy 2-core machine that is 1 thread, on an idle one every core. PyTorch's OpenMP threads spin-wait on each
    other, so one more thread than free cores costs 3-13x (docs/training.md, "Threads";
    scripts/thread_defaults.py). MindSpore's own pool is left as it is: it measured no better with 1 thread.
  * ``use_threads`` applies a count to one framework; it imports that framework, and only then.
  * ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (``pin_cublas_workspace``) is set, unless already set, when a twin
    switches PyTorch's deterministic mode on (``ddpm_torch.device.use_deterministic``): cuBLAS reads it when
    a process creates its first handle, so it must come before any CUDA matrix product; without it
    ``torch.use_deterministic_algorithms(True)`` refuses CUDA matrix products.
  * ``child_env`` is the one place a child's environment is built: the ISA pin, quiet MindSpore logs, this
    interpreter first on ``PATH`` (msrun runs ``python``), the repository on ``PYTHONPATH``, the thread
    count, the collective timeout.
Imports neither framework at import time.
"""
from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from ddpm_core.runtime.distributed import TIMEOUT_ENV

ISA_VARIABLE = "ONEDNN_MAX_CPU_ISA"
ISA = "AVX2"
THREADS_VARIABLE = "OMP_NUM_THREADS"
CUBLAS_VARIABLE = "CUBLAS_WORKSPACE_CONFIG"
CUBLAS_DETERMINISTIC = ":4096:8"


def pin_isa(environ: MutableMapping[str, str] = os.environ) -> None:
    """``ONEDNN_MAX_CPU_ISA=AVX2`` in ``environ`` unless it is already set (the user's value wins). Call it
    before MindSpore's first CPU kernel: oneDNN reads the variable once."""
    environ.setdefault(ISA_VARIABLE, ISA)


def pin_cublas_workspace(environ: MutableMapping[str, str] = os.environ) -> None:
    """``CUBLAS_WORKSPACE_CONFIG=:4096:8`` in ``environ`` unless it is already set (":16:8" is the user's other
    deterministic choice): the workspace cuBLAS needs to give bit-identical matrix products run to run."""
    environ.setdefault(CUBLAS_VARIABLE, CUBLAS_DETERMINISTIC)


def cores() -> int:
    """The CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # no load average on this platform: assume an idle machine
        return 0.0


def default_threads(environ: Mapping[str, str] = os.environ, n_cores: int | None = None,
                    load: float | None = None) -> int:
    """The intra-op thread count a process should use: ``OMP_NUM_THREADS`` when it holds a positive integer,
    else ``n_cores`` (default: ``cores()``) minus the 1-minute ``load`` (default: the machine's), rounded
    down, at least 1 and at most ``n_cores``. ``ValueError`` naming the variable if it is set but invalid."""
    value = environ.get(THREADS_VARIABLE, "").strip()
    if value:
        try:
            threads = int(value)
        except ValueError:
            threads = 0
        if threads < 1:
            raise ValueError(f"{THREADS_VARIABLE}={value!r}: expected a positive whole number of threads")
        return threads
    n = cores() if n_cores is None else n_cores
    busy = _load() if load is None else load
    return max(1, min(n, math.floor(n - busy + 0.5)))


def use_threads(framework: str, threads: int) -> int:
    """Give this process ``threads`` intra-op threads in ``framework`` ("torch": ``torch.set_num_threads``;
    "ms"/"mindspore": its CPU kernel pool, ``threads_num``, which MindSpore accepts once per process, before its
    first kernel); returns the count now in use."""
    if framework == "torch":
        import torch

        torch.set_num_threads(threads)
        return torch.get_num_threads()
    if framework in ("mindspore", "ms"):
        import mindspore as ms

        ms.device_context.cpu.op_tuning.threads_num(threads)
        return threads
    raise ValueError(f"unknown framework {framework!r}: expected torch or mindspore")


def lower_torch_threads() -> int:
    """Unless ``OMP_NUM_THREADS`` is set, lower PyTorch's intra-op threads to ``default_threads()`` (never
    raise them); returns the count in use. What importing ``ddpm_torch`` does."""
    import torch

    if not os.environ.get(THREADS_VARIABLE, "").strip():
        wanted = default_threads()
        if wanted < torch.get_num_threads():
            torch.set_num_threads(wanted)
    return torch.get_num_threads()


def child_env(*, threads: int | None = None, timeout_s: float | None = None, pythonpath: str | Path | None = None,
              isa: str | bool = True, python: str | None = sys.executable, base: Mapping[str, str] | None = None,
              **extra: str) -> dict[str, str]:
    """The environment for a child process: ``base`` (default ``os.environ``) with the ISA (``isa`` True: pinned
    unless set; False: removed, oneDNN's default; a string: exactly that), ``GLOG_v=3`` unless set, the folder
    of ``python`` (default: this interpreter; None: ``PATH`` as it is) first on ``PATH``, ``pythonpath`` first on
    ``PYTHONPATH``, ``OMP_NUM_THREADS=threads`` and the collective timeout ``DDPM_DIST_TIMEOUT=timeout_s`` where
    given, then ``extra``."""
    env = dict(os.environ if base is None else base)
    if isa is True:
        pin_isa(env)
    elif isa is False:
        env.pop(ISA_VARIABLE, None)
    else:
        env[ISA_VARIABLE] = isa
    env.setdefault("GLOG_v", "3")
    if python is not None:
        env["PATH"] = os.pathsep.join(filter(None, [os.path.dirname(python), env.get("PATH")]))
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    if threads is not None:
        env[THREADS_VARIABLE] = str(threads)
    if timeout_s is not None:
        env[TIMEOUT_ENV] = str(int(math.ceil(timeout_s)))
    env.update(extra)
    return env
