"""The machine's load, read from /proc: CPU seconds of a process, the cores other processes used over a
window ("foreign" cores), waiting for a quiet machine, a process tree, and the CPU model.

Rule: every reading excludes the bench's own processes (the parent, its workers and their children), so
what is reported as foreign is what other users of the machine took while a figure was measured.
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any, Sequence


def cpu_seconds(pid: int, children: bool = False) -> float:
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
        ours = cpu_seconds(os.getpid(), children=True) + sum(cpu_seconds(p) for p in self.pids)
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


def process_tree(root: int) -> list[int]:
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


def cpu_info() -> dict[str, Any]:
    """The CPU model (from /proc/cpuinfo where there is one) and the core count."""
    info: dict[str, Any] = {"cpu_model": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    if Path("/proc/cpuinfo").is_file():
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        info["cpu_model"] = names[0] if names else info["cpu_model"]
    return info
