"""Launching a job, in one place: a module as one plain process, or as N workers under the framework's
own launcher (``torchrun`` for PyTorch, ``msrun`` for MindSpore), with a timeout, its own process group
and the tails of its logs.

Rules:
  * one worker is a plain ``python -m MODULE`` process (a launcher with one worker runs the same thing plus
    its start-up); N > 1 workers go through ``ddpm_core.runtime.distributed.torchrun_command`` / ``msrun_command``;
  * every job runs in a new session (its own process group): on a timeout, or when the caller is
    interrupted, the whole group is killed, so no launcher or worker outlives the call;
  * the environment comes from ``ddpm_core.runtime.environment.child_env`` (the caller passes it);
  * a failure is described by ``describe``: what ran, why it stopped, the first ``error: `` line any process
    printed and the last lines of every log. Never a hang.
Imports neither framework.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ddpm_core.runtime.distributed import free_port, msrun_command, torchrun_command

LAUNCHERS = {"torch": "torchrun", "ms": "msrun"}
TAIL_LINES = 12


class LaunchError(RuntimeError):
    """A job that failed or ran past its timeout; the message names the launcher and ends with its logs' tails."""


@dataclass(frozen=True)
class JobCommand:
    """One job's command line: ``launcher`` is "none" (a plain process), "torchrun" or "msrun"; ``log_dir`` is
    where msrun writes its workers' logs (None otherwise)."""

    argv: list[str]
    launcher: str
    workers: int
    log_dir: Path | None = None

    @property
    def what(self) -> str:
        """``a single process`` / ``torchrun (2 workers)``: for messages."""
        return "a single process" if self.launcher == "none" else f"{self.launcher} ({self.workers} workers)"

    def logs(self) -> list[Path]:
        """The per-worker logs the launcher wrote (msrun's), sorted; none for the others."""
        return sorted(self.log_dir.glob("*.log")) if self.log_dir is not None and self.log_dir.is_dir() else []


def job_command(framework: str, workers: int, module: str, args: Sequence[str], log_dir: str | Path | None = None,
                python: str = sys.executable) -> JobCommand:
    """``python -m MODULE ARGS`` for one worker; under torchrun (``framework`` "torch") or msrun ("ms", its logs
    in ``log_dir``, required) for ``workers`` > 1, on a free local port."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        return JobCommand([python, "-m", module, *args], "none", 1)
    if framework == "torch":
        return JobCommand(torchrun_command(workers, module, args, free_port(), python=python), "torchrun", workers)
    if framework == "ms":
        if log_dir is None:
            raise ValueError("msrun needs a log folder")
        return JobCommand(msrun_command(workers, module, args, free_port(), str(log_dir), python=python), "msrun",
                          workers, Path(log_dir))
    raise ValueError(f"unknown framework {framework!r}: expected torch or ms")


@dataclass(frozen=True)
class Finished:
    """How a job ended: ``code`` its exit status (None: it ran past ``timeout_s`` and its group was killed)."""

    code: int | None
    wall_s: float
    timeout_s: float | None

    @property
    def ok(self) -> bool:
        return self.code == 0

    @property
    def why(self) -> str:
        """Why it did not succeed, in a few words ("" when it did)."""
        if self.code is None:
            return f"ran past its {self.timeout_s:g} s timeout and was stopped"
        return f"exited with code {self.code}" if self.code else ""


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc``'s whole process group (it was started in its own session) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run(argv: Sequence[str], env: Mapping[str, str], cwd: str | Path, log: str | Path | None = None,
        timeout_s: float | None = None) -> Finished:
    """Run ``argv`` in its own session, stdout and stderr into ``log`` (None: this process's own), and wait up
    to ``timeout_s``; past it, or if the wait is interrupted, the whole group is killed."""
    start = time.perf_counter()
    sink = open(log, "wb") if log is not None else None  # the child keeps its own copy of the descriptor
    try:
        proc = subprocess.Popen(list(argv), stdout=sink, stderr=subprocess.STDOUT if sink else None, env=dict(env),
                                cwd=cwd, start_new_session=True)
    finally:
        if sink is not None:
            sink.close()
    code: int | None = None
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        if proc.poll() is None or code is None:  # timed out, or interrupted: nothing of it may outlive us
            kill_group(proc)
    return Finished(code, time.perf_counter() - start, timeout_s)


def tail(paths: Sequence[Path], lines: int = TAIL_LINES, chars: int | None = None) -> str:
    """The last ``lines`` non-empty lines of each readable, non-empty log, each headed by its name (and cut to
    its last ``chars`` characters where given); "(no output)" if there are none."""
    parts = []
    for path in paths:
        try:
            text = [ln for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            continue
        if text:
            body = "\n".join(text[-lines:])
            parts.append(f"--- {Path(path).name} (last {min(len(text), lines)} lines)\n"
                         + (body[-chars:] if chars else body))
    return "\n".join(parts) or "(no output)"


CRASH_MARKS = ("terminate called", "Fatal Python error", "Segmentation fault", "Aborted", "Killed")
"""How a worker's own crash starts its line (a launcher prints only the signal number of it)."""


def first_error(paths: Sequence[Path]) -> str:
    """The first ``error: ...`` line any of ``paths`` holds, else the first line of a crash (``CRASH_MARKS``);
    "" if neither."""
    crash = ""
    for path in paths:
        try:
            lines = Path(path).read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("error: "):
                return line
            if not crash and line.lstrip().startswith(CRASH_MARKS):
                crash = line.strip()
    return crash


def describe(what: str, job: JobCommand, finished: Finished, log: Path, why: str | None = None) -> str:
    """One message for a job that did not succeed: ``WHAT, LAUNCHER, WHY[; FIRST ERROR]`` then the logs' tails."""
    logs = [log, *job.logs()]
    error = first_error(logs)
    reason = why or finished.why or "exited without writing its result"
    return f"{what}, {job.what}, {reason}" + (f"; {error}" if error else "") + "\n" + tail(logs)
