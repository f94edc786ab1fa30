"""Run Python as on a host that has only one framework (docs/hosts.md): the other framework's modules cannot be
imported, in the process and in every process it starts.

    python tests/one_framework.py mindspore -m pytest -q tests          # the suite on a PyTorch-only host
    python tests/one_framework.py torch,torchvision -m parity.check record --framework ms ...

The blocking is ``tests/blocker/sitecustomize.py``: that folder goes first on ``PYTHONPATH`` and
``DDPM_PARITY_BLOCK`` names the modules, which then raise ``ModuleNotFoundError`` as an uninstalled package
does. The real one-framework virtual environments are in scripts/version_matrix.py.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(__file__).resolve().parent / "blocker"
VARIABLE = "DDPM_PARITY_BLOCK"  # as tests/blocker/sitecustomize.py reads it
HOST = {"torch": ("mindspore",), "ms": ("torch", "torchvision")}
"""a host's framework -> the modules blocked there."""


def blocked_env(blocked: tuple[str, ...], base: dict | None = None, **extra: str) -> dict[str, str]:
    """The environment of a child process (``ddpm_core.runtime.environment.child_env``) where ``blocked`` modules, and
    any the parent already blocks, cannot be imported. CI's demand that every framework import
    (``DDPM_PARITY_REQUIRE``, .ci/run) does not hold on the host this simulates, so it is not passed on unless
    ``extra`` sets it."""
    from ddpm_core.runtime.environment import child_env
    from tests.host import REQUIRE_VARIABLE

    env = child_env(pythonpath=os.pathsep.join([str(SITE), str(ROOT)]), base=base, GLOG_v="3", **extra)
    if REQUIRE_VARIABLE not in extra:
        env.pop(REQUIRE_VARIABLE, None)
    already = [m for m in env.get(VARIABLE, "").split(",") if m]
    env[VARIABLE] = ",".join(dict.fromkeys([*already, *blocked]))
    return env


def run(host: str, module: str, args: list, env: dict | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m module args`` on a ``host`` ("torch" or "ms") host: the other framework blocked."""
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, env=blocked_env(HOST[host], env),
                          capture_output=True, text=True, timeout=timeout)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python tests/one_framework.py MODULE[,MODULE...] PYTHON_ARGS...")
    sys.path[0] = str(ROOT)  # ddpm_core, not tests/
    env = blocked_env(tuple(m for m in sys.argv[1].split(",") if m))
    os.execve(sys.executable, [sys.executable, *sys.argv[2:]], env)
