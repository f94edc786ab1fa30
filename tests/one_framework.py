"""Run a module as ``python -m MODULE ARGS`` in a process where some frameworks cannot be imported, as on a
host that has only the other one (docs/hosts.md).

    python tests/one_framework.py torch,torchvision parity.check record --framework ms ...

A meta-path finder placed first raises ``ModuleNotFoundError`` (``name`` the top-level module) for each
blocked module and its submodules: what ``import torch`` raises where PyTorch is not installed. The real
one-framework virtual environments are in scripts/version_matrix.py.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOST = {"torch": ("mindspore",), "ms": ("torch", "torchvision")}
"""a host's framework -> the modules blocked there."""


class Blocker:
    """``sys.meta_path`` finder that makes ``blocked`` modules look uninstalled."""

    def __init__(self, blocked: tuple[str, ...]):
        self.blocked = blocked

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        top = name.split(".")[0]
        if top in self.blocked:
            raise ModuleNotFoundError(f"No module named {top!r}", name=top)


def run(host: str, module: str, args: list, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m module args`` on a ``host`` ("torch" or "ms") host: the other framework blocked."""
    from ddpm_core.environment import child_env

    env = child_env(pythonpath=ROOT, base=env, GLOG_v="3")
    return subprocess.run([sys.executable, __file__, ",".join(HOST[host]), module, *map(str, args)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


if __name__ == "__main__":
    import runpy

    sys.meta_path.insert(0, Blocker(tuple(sys.argv[1].split(","))))
    sys.path.remove(str(Path(__file__).resolve().parent))  # tests/ itself is not on a user's path
    sys.argv = [sys.argv[2], *sys.argv[3:]]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
